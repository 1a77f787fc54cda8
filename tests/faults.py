"""Faults for the reliability tests: kill the process, or raise out-of-memory, at a named point.

A fault is written as `<action>:<point>:<target>[@<n>]`, and installed in a forked child
(tests/forked.py) through the code's own seams: a storage backend that wraps the real one
(job.storage.BACKENDS), the local backend's rename (LocalBackend's `replace`) and the training
loop's per-batch callback (train.main's on_batch).
The code under test carries no fault logic of its own. A test that runs whole processes (a local
sweep starting its train steps) puts tests/faultinject on PYTHONPATH with MELI_FAULT set: its
sitecustomize installs the fault in each of them.

  action   kill   SIGKILL this process (what a preempted node or the OOM killer does)
           oom    raise torch.OutOfMemoryError (there may be no GPU to run out of)
           hang   stop there until killed from outside (the test waits for what it needs, then kills)
  point    before-write  just before the object <target> is written
           mid-write     inside the real local writer, between its write and its rename: the whole
                         new file is synced under a temp name beside <target>, the old one still in
                         place. Local files only: an S3 write is one PUT with nothing in between, so
                         the tests stall it halfway in the proxy (tests/faultproxy.py) and kill the
                         process there.
           after-write   just after <target> is complete
           mid-epoch     after half of the batches of epoch <n> of the run whose folder ends in <run>,
                         written <run>/epoch-<n> or epoch-<n>
  target   matched against the end of the path: `checkpoint.pt` is any run's checkpoint,
           `hidden50/checkpoint.pt` only that run's
  @n       act on the n-th match in this process (default 1)

Examples: `kill:mid-write:checkpoint.pt@2`, `kill:mid-epoch:epoch-2`, `oom:mid-epoch:epoch-1`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

ACTIONS = ("kill", "oom", "hang")
POINTS = ("before-write", "mid-write", "after-write", "mid-epoch")


@dataclass
class Fault:
    action: str  # kill | oom | hang
    point: str  # one of POINTS
    target: str  # the end of a path, e.g. checkpoint.pt or hidden50/epoch-2
    nth: int = 1  # act on this match
    seen: int = field(default=0)  # matches so far

    @classmethod
    def parse(cls, text: str) -> "Fault":
        action, point, target = (text.split(":", 2) + ["", ""])[:3]
        target, _, nth = target.partition("@")
        if action not in ACTIONS or point not in POINTS or not target or (nth and not nth.isdigit()):
            raise ValueError(f"fault {text!r}: expected <{'|'.join(ACTIONS)}>:<{'|'.join(POINTS)}>:<target>[@n]")
        return cls(action, point, target, int(nth or 1))

    def matches(self, point: str, path: str) -> bool:
        """True on the n-th time this point is reached for a matching path."""
        if point != self.point or not (path == self.target or path.endswith("/" + self.target)):
            return False
        self.seen += 1
        return self.seen == self.nth

    def fire(self) -> None:
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "hang":
            while True:  # other threads (an upload, the MLflow logging) go on
                time.sleep(1)
        import torch

        raise torch.OutOfMemoryError("out of memory (test fault)")


class FaultyBackend:
    """Wraps a real storage backend; acts before and after a write, passes everything else through."""

    def __init__(self, inner, fault: Fault):
        self.inner, self.fault = inner, fault

    def exists(self, uri: str) -> bool:
        return self.inner.exists(uri)

    def read_bytes(self, uri: str) -> bytes:
        return self.inner.read_bytes(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        if self.fault.matches("before-write", uri):
            self.fault.fire()
        self.inner.write_bytes(uri, data)
        if self.fault.matches("after-write", uri):
            self.fault.fire()

    def put_file(self, local, uri: str) -> None:
        if self.fault.matches("before-write", uri):
            self.fault.fire()
        self.inner.put_file(local, uri)
        if self.fault.matches("after-write", uri):
            self.fault.fire()


def firing_replace(fault: Fault):
    """The local backend's rename, acting first when the fault's mid-write point is reached for the target."""

    def replace(tmp, dest) -> None:
        if fault.matches("mid-write", str(dest)):
            fault.fire()
        os.replace(tmp, dest)

    return replace


ENV = "MELI_FAULT"  # the fault, for the processes of a test that puts tests/faultinject on PYTHONPATH


def install(text: str, run_folder: str):
    """Wrap this process's storage backends with the fault; returns train's per-batch callback for a
    run writing to run_folder."""
    from job import storage

    fault = Fault.parse(text)
    storage.BACKENDS["local"] = FaultyBackend(storage.LocalBackend(replace=firing_replace(fault)), fault)
    storage.BACKENDS["s3"] = FaultyBackend(storage.BACKENDS["s3"], fault)

    def on_batch(epoch: int, done: int, total: int) -> None:
        # after half of the epoch's batches (at least one), once per epoch
        if done == max(1, total // 2) and fault.matches("mid-epoch", f"{run_folder.rstrip('/')}/epoch-{epoch}"):
            fault.fire()

    return on_batch


def out_of(argv: list[str]) -> str:
    """The --out of a job command line: the run folder of train."""
    return argv[argv.index("--out") + 1] if "--out" in argv else ""

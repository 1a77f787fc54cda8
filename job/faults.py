"""Test-only fault injection: kill the process, or raise out-of-memory, at a named point.

Nothing happens unless the environment variable MELI_FAULT is set; the reliability tests set it
to prove that a run killed at any of these points resumes from its last complete checkpoint.

    MELI_FAULT=<action>:<point>:<target>[@<n>]

  action   kill   SIGKILL this process (what a preempted node or the OOM killer does)
           oom    raise torch.OutOfMemoryError (there may be no GPU to run out of)
  point    before-write  just before the file <target> is written
           mid-write     halfway through writing <target>: a local temp file holds half the bytes,
                         an S3 multipart upload holds half the object as its one part
           after-write   just after <target> is complete
           mid-epoch     after half of the batches of the epoch whose path is <run folder>/epoch-<n>
  target   matched against the end of the path: `checkpoint.pt` is any run's checkpoint,
           `hidden50/checkpoint.pt` only that run's; `epoch-2` or `hidden50/epoch-2` for mid-epoch
  @n       act on the n-th match in this process (default 1)

Examples: `kill:mid-write:checkpoint.pt@2`, `kill:mid-epoch:epoch-2`, `oom:mid-epoch:mlp256/epoch-1`.
"""

from __future__ import annotations

import os
import signal

from job.errors import UserError

ENV = "MELI_FAULT"
ACTIONS = ("kill", "oom")
POINTS = ("before-write", "mid-write", "after-write", "mid-epoch")

_seen: dict[str, int] = {}  # matches so far in this process, for @n (test-only state)


def _spec() -> tuple[str, str, str, int] | None:
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    action, point, target = (text.split(":", 2) + ["", ""])[:3]
    target, _, nth = target.partition("@")
    if action not in ACTIONS or point not in POINTS or not target or (nth and not nth.isdigit()):
        raise UserError(f"{ENV}={text!r}: expected <kill|oom>:<{'|'.join(POINTS)}>:<target>[@n]")
    return action, point, target, int(nth or 1)


def armed(point: str, path: str) -> bool:
    """True when MELI_FAULT names this point and path, counting matches for @n."""
    spec = _spec()
    if spec is None or spec[1] != point:
        return False
    target, nth = spec[2], spec[3]
    if not (path == target or path.endswith("/" + target)):
        return False
    key = f"{point}:{target}"
    _seen[key] = _seen.get(key, 0) + 1
    return _seen[key] == nth


def fire() -> None:
    """Do the armed action now."""
    action = _spec()[0]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    import torch

    raise torch.OutOfMemoryError(f"out of memory ({ENV} test fault)")


def at(point: str, path: str) -> None:
    """A named point: acts only when MELI_FAULT names it."""
    if armed(point, path):
        fire()


def epoch_batches(batches: list, run_folder: str, epoch: int):
    """The epoch's batches; when `mid-epoch` is armed for it, acts after half of them have run."""
    if not os.environ.get(ENV) or not armed("mid-epoch", f"{run_folder.rstrip('/')}/epoch-{epoch}"):
        return batches

    def cut():
        yield from batches[:len(batches) // 2]
        fire()

    return cut()

"""Load: a local sweep of 12 configs with bounded parallelism, and a second sweep under the same
prefix at the same time. Outputs stay separated per run and per sweep, the two prepares of the
same data do not collide, and memory stays bounded: the prepared arrays are memory-mapped.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SMALL = "epochs=1,max_train_rows=300"
SWEEP_A = f"mlp256:{SMALL},seed=0|1|2|3|4|5,hidden50:{SMALL},seed=0|1|2|3|4|5"  # 12 runs
SWEEP_B = f"mlp256:{SMALL},seed=0"  # 1 run, named like one of sweep A's
PARALLEL = 3
PEAK_RSS_LIMIT = 1536 << 20  # bytes: one train process of the tiny data (torch itself is most of it)
LINE = re.compile(r"^\[(?P<run>[^\]]+)\] (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def run_names(spec: str) -> list[str]:
    from job import configs

    return [r.name for r in configs.expand(spec)]


def start_sweep(configs: str, sweep: str, data: Path, out: Path, parallel: int, logs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "job", "sweep", "--configs", configs, "--data", str(data),
                             "--out", str(out), "--sweep", sweep, "--parallel", str(parallel), "--no-baseline"],
                            cwd=ROOT, stdout=open(logs / f"{sweep}.out", "w"), stderr=open(logs / f"{sweep}.err", "w"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # tiny runs: threads only contend


def train_children(pid: int) -> int:
    """How many `python -m job train` processes the sweep with this pid has running now."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"\0train\0" in (proc / "cmdline").read_bytes():
                count += 1
        except (OSError, ValueError, IndexError):
            continue
    return count


def most_at_once(stderr: str) -> int:
    """The most runs whose log lines overlap in time: a lower bound of the processes alive at once."""
    spans: dict[str, list[datetime]] = {}
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m:
            t = datetime.strptime(m["time"], "%Y-%m-%d %H:%M:%S,%f")
            spans.setdefault(m["run"], [t, t])[1] = t
    events = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()], key=lambda e: (e[0], -e[1]))
    alive = peak = 0
    for _, step in events:
        alive += step
        peak = max(peak, alive)
    return peak


def test_twelve_configs_and_a_second_sweep_under_the_same_prefix(tiny_csv, tmp_path):
    out = tmp_path / "out"
    a = start_sweep(SWEEP_A, "load-a", tiny_csv, out, PARALLEL, tmp_path)
    b = start_sweep(SWEEP_B, "load-b", tiny_csv, out, 1, tmp_path)
    deadline = time.time() + 400
    at_once = []
    while a.poll() is None and time.time() < deadline:
        at_once.append(train_children(a.pid))
        time.sleep(0.25)
    assert a.wait(timeout=max(1, deadline - time.time())) == 0, (tmp_path / "load-a.err").read_text()[-3000:]
    assert b.wait(timeout=max(1, deadline - time.time())) == 0, (tmp_path / "load-b.err").read_text()[-3000:]
    a_out, b_out = (tmp_path / "load-a.out").read_text(), (tmp_path / "load-b.out").read_text()
    assert "12 of 12 runs finished" in a_out and "1 of 1 runs finished" in b_out

    # The two sweeps prepared the same data at once into one folder, and it is whole.
    prepared = list((out / "prepared").iterdir())
    assert len(prepared) == 1
    manifest = json.loads((prepared[0] / "manifest.json").read_text())
    import hashlib

    for fname, meta in manifest["files"].items():
        assert hashlib.sha256((prepared[0] / fname).read_bytes()).hexdigest() == meta["sha256"], fname

    # Every run has its own folder with its own outputs; each report lists exactly its sweep's runs.
    for sweep, spec in (("load-a", SWEEP_A), ("load-b", SWEEP_B)):
        names = run_names(spec)
        folder = out / "sweeps" / sweep
        assert sorted(p.name for p in folder.iterdir()) == sorted(names + ["best", "report"])
        for name in names:
            summary = json.loads((folder / name / "summary.json").read_text())
            assert summary["config"] == name and summary["status"] == "ok" and summary["epochs"] == 1
            assert len((folder / name / "metrics.jsonl").read_text().splitlines()) == 1
            assert {"checkpoint.pt", "model.pt"} <= {p.name for p in (folder / name).iterdir()}
        report = json.loads((folder / "report" / "summary.json").read_text())
        assert sorted(r["config"] for r in report["rows"]) == sorted(names) and report["ok"] == len(names)
    shared = run_names(SWEEP_B)[0]
    a_sum = json.loads((out / "sweeps" / "load-a" / shared / "summary.json").read_text())
    b_sum = json.loads((out / "sweeps" / "load-b" / shared / "summary.json").read_text())
    assert a_sum["test_balanced_accuracy"] == b_sum["test_balanced_accuracy"]  # same config, same seed, same data
    assert not list(out.rglob("*.tmp"))  # no write was left half done

    # Bounded: at most PARALLEL runs of sweep A at once (seen both in /proc and in its log), and no
    # train process grew past the limit.
    assert 2 <= max(at_once) <= PARALLEL, at_once
    assert most_at_once((tmp_path / "load-a.err").read_text()) <= PARALLEL
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux; the largest waited-for process
    assert peak < PEAK_RSS_LIMIT, f"a child process peaked at {peak >> 20} MiB"


def test_prepared_arrays_are_memory_mapped_not_copied(tiny_prepared):
    """Parallel trainers share one copy of the prepared data in the page cache."""
    from job.prepare import open_prepared

    prepared = open_prepared(tiny_prepared)
    assert prepared.arrays and all(isinstance(a, np.memmap) for a in prepared.arrays.values())
    assert all(not a.flags.writeable for a in prepared.arrays.values())  # read-only maps: nobody can change the shared copy

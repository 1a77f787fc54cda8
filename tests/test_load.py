"""Load: a local sweep of 12 configs with bounded parallelism, and a second sweep under the same
prefix at the same time. Outputs stay separated per run and per sweep, the two prepares of the
same data do not collide, and the trainers share one copy of the prepared arrays: they memory-map them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

SMALL = "epochs=1,max_train_rows=300"
SWEEP_A = f"mlp256:{SMALL},seed=0|1|2|3|4|5,hidden50:{SMALL},seed=0|1|2|3|4|5"  # 12 runs
SWEEP_B = f"mlp256:{SMALL},seed=0"  # 1 run, named like one of sweep A's
PARALLEL = 3
LINE = re.compile(r"^\[(?P<run>[^\]]+)\] (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def run_names(spec: str) -> list[str]:
    from job import configs

    return [r.name for r in configs.expand(spec)]


def start_sweep(configs: str, sweep: str, data: Path, out: Path, parallel: int, logs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "job", "sweep", "--configs", configs, "--data", str(data),
                             "--out", str(out), "--sweep", sweep, "--parallel", str(parallel), "--no-baseline"],
                            cwd=ROOT, stdout=open(logs / f"{sweep}.out", "w"), stderr=open(logs / f"{sweep}.err", "w"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # tiny runs: threads only contend


def train_children(pid: int) -> list[Path]:
    """The /proc folders of the `python -m job train` processes the sweep with this pid has running now."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"\0train\0" in (proc / "cmdline").read_bytes():
                found.append(proc)
        except (OSError, ValueError, IndexError):
            continue
    return found


def mapped_arrays(proc: Path, folder: Path) -> set[tuple[str, str]]:
    """(file, permissions) of every .npy file under folder that the process has memory-mapped now."""
    try:
        maps = (proc / "maps").read_text()
    except OSError:  # the process has ended
        return set()
    found = set()
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith(f"{folder}/") and fields[5].endswith(".npy"):
            found.add((fields[5], fields[1]))
    return found


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


@pytest.mark.slow
def test_twelve_configs_and_a_second_sweep_under_the_same_prefix(tiny_csv, tmp_path):
    out = tmp_path / "out"
    a = start_sweep(SWEEP_A, "load-a", tiny_csv, out, PARALLEL, tmp_path)
    b = start_sweep(SWEEP_B, "load-b", tiny_csv, out, 1, tmp_path)
    deadline = time.time() + 400
    at_once, mapped = [], set()
    while a.poll() is None and time.time() < deadline:
        children = train_children(a.pid)
        at_once.append(len(children))
        for child in children:
            mapped |= mapped_arrays(child, (out / "prepared").resolve())
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

    # Bounded: at most PARALLEL runs of sweep A at once (seen both in /proc and in its log), and the
    # trainers map the one prepared folder's arrays read-only and shared (r--s): one copy in the page cache.
    assert 2 <= max(at_once) <= PARALLEL, at_once
    assert most_at_once((tmp_path / "load-a.err").read_text()) <= PARALLEL
    assert mapped, "no train process was seen with the prepared arrays memory-mapped"
    assert {perms for _, perms in mapped} == {"r--s"}, mapped
    assert {Path(path).parent for path, _ in mapped} == {prepared[0].resolve()}


@pytest.mark.slow
def test_prepared_arrays_are_memory_mapped_not_copied(tiny_prepared):
    """Parallel trainers share one copy of the prepared data in the page cache."""
    from job.prepare import open_prepared

    prepared = open_prepared(tiny_prepared)
    assert prepared.arrays and all(isinstance(a, np.memmap) for a in prepared.arrays.values())
    assert all(not a.flags.writeable for a in prepared.arrays.values())  # read-only maps: nobody can change the shared copy

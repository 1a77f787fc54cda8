"""K training processes on one device (`make bench-share`): the table's arithmetic, and a real run of K=1,2 on the CPU.

Benchmarks print figures; nothing here asserts a timing.
"""

import re
import subprocess
import sys

import pytest

from conftest import ROOT
from job import share_bench
from job.errors import UserError
from job.share_bench import Share, ShareSizes


def test_counts_are_sorted_and_bad_ones_are_one_clear_error():
    assert share_bench.parse_counts("8,1,2,4,2") == [1, 2, 4, 8]
    for raw in ("", "0", "1,x", "65"):
        with pytest.raises(UserError, match="--share"):
            share_bench.parse_counts(raw)


def test_aggregate_is_all_samples_over_the_span_from_the_first_start_to_the_last_end():
    one = {1: [Share(0, 100.0, 110.0, 1000, 2**20)]}
    four = {4: [Share(i, 100.0 + i, 120.0 + i, 1000, 2**21) for i in range(4)]}
    assert share_bench.aggregate(one[1]) == 100.0
    assert share_bench.aggregate(four[4]) == 4000 / 23  # 100.0 .. 123.0
    rows = share_bench.table({**one, **four}).splitlines()
    assert rows[1].split() == ["1", "100", "1.00x", "100", "100..100", "10.00", "1"]
    assert rows[2].split() == ["4", "174", "1.74x", "50", "50..50", "23.00", "2"]
    assert "1.74x one run's samples/s (target >= 3x on cuda) FAIL" in share_bench.verdict({**one, **four}, "cuda")
    fast = {4: [Share(i, 100.0, 110.0, 3500, 0) for i in range(4)]}
    assert share_bench.verdict({**one, **fast}, "cuda").endswith("14.00x one run's samples/s (target >= 3x on cuda) PASS")
    assert "not judged (the target is a GPU's" in share_bench.verdict({**one, **fast}, "cpu")
    assert "not judged (measure both" in share_bench.verdict(one, "cuda")


def test_a_process_that_fails_is_named_and_frees_the_others_from_the_barrier():
    with pytest.raises(UserError, match=r"K=2: process \d: KeyError: 'nope'"):
        share_bench.run_k(2, "nope", ShareSizes(rows=300, epochs=1, classes=20), "cpu")


def test_bad_sizes_are_one_line_without_a_traceback():
    run = subprocess.run([sys.executable, "-m", "job", "bench", "--share", "1,2", "--device", "cpu", "--classes", "5000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].endswith("--classes 5000: use 2 to 632")


@pytest.mark.slow
def test_two_processes_train_at_once_and_the_table_adds_them_up():
    run = subprocess.run([sys.executable, "-m", "job", "bench", "--share", "2,1", "--device", "cpu", "--rows", "2000",
                          "--epochs", "1", "--classes", "20"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "hidden100 on cpu, K = 1, 2 processes at once; each 2,000 rows, 20 classes" in out
    rows = {r.split()[0]: r.split() for r in out.splitlines() if re.match(r"^\s*[12]\s+[\d,]+\s", r)}
    assert list(rows) == ["1", "2"]
    one, two = ({"aggregate": int(r[1].replace(",", "")), "ratio": r[2], "median": int(r[3].replace(",", "")),
                 "span": float(r[5]), "peak": int(r[6].replace(",", ""))} for r in (rows["1"], rows["2"]))
    assert one["ratio"] == "1.00x" and abs(one["aggregate"] - one["median"]) <= 1  # one process: its own rate
    # Two processes each train 2,000 rows once: 4,000 samples over the span that covers both (printed to 0.01 s).
    assert 4000 / (two["span"] + 0.005) - 1 <= two["aggregate"] <= 4000 / max(two["span"] - 0.005, 1e-3) + 1
    assert two["ratio"] == f"{two['aggregate'] / one['aggregate']:.2f}x" or \
        abs(float(two["ratio"][:-1]) - two["aggregate"] / one["aggregate"]) < 0.02  # the table rounds both
    assert one["peak"] > 50 and two["peak"] > 50  # each process's own resident peak (MB): torch is in it
    assert re.search(r"^K=4 against K=1: not judged", out, re.M)

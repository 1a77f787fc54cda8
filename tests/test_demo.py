"""`make demo` itself, on fewer rows, then `make predict` on some of its titles: what the README promises.

The README says the demo ranks its runs by validation with the `tfidf` baseline first, over 60 synthetic
categories; this test checks each of those on a demo of DEMO_ROWS rows, with the default configs.

    make test PYTEST_ARGS=tests/test_demo.py
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from job import steps

DEMO_ROWS = 2000  # the default is 60,000; the runs, configs and report are the same
CATEGORIES = 60  # what the README says the demo's data has (synth's default)


def make(target: str, *variables: str, timeout: float) -> subprocess.CompletedProcess:
    """`make <target>` with this interpreter's venv, taken as installed (make does not rebuild it)."""
    venv = Path(sys.executable).parent.parent
    proc = subprocess.run(["make", "--no-print-directory", target, f"VENV={venv}", "-o", f"{venv}/.installed", *variables],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"make {target} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_make_demo_reports_ranks_and_predicts(tmp_path):
    runs = tmp_path / "runs"
    proc = make("demo", f"RUNS={runs}", f"DEMO_ROWS={DEMO_ROWS}", timeout=1200)
    report = runs / "sweeps" / "demo" / "report"

    # What it prints at the end: every run finished, and where the report is.
    assert "sweep demo: 3 of 3 runs finished" in proc.stdout, proc.stdout[-2000:]
    assert f"report: {report}/summary.md" in proc.stdout

    # Every report file, each what its name says.
    for name in steps.REPORT_FILES:
        blob = (report / name).read_bytes()
        assert blob, name
        if name.endswith(".png"):
            assert blob[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = json.loads((report / "summary.json").read_text())
    with open(report / "summary.csv") as f:
        assert [r["config"] for r in csv.DictReader(f)] == [r["config"] for r in summary["rows"]]
    with open(report / "per_class.csv") as f:
        assert len(list(csv.DictReader(f))) > 10  # one line per category of the test split

    # The ranking: the default configs and the baseline, by validation balanced accuracy, tfidf first.
    rows = summary["rows"]
    assert sorted(r["config"] for r in rows) == ["hidden100", "hidden50", "tfidf"]
    assert all(r["status"] == "ok" for r in rows)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    validation = [r["validation_balanced_accuracy"] for r in rows]
    assert validation == sorted(validation, reverse=True)
    assert rows[0]["config"] == "tfidf" and rows[0]["best"]
    assert re.search(r"\(3 of 3 runs ok, best: tfidf\)", proc.stderr), proc.stderr[-2000:]  # the ranking line
    md = (report / "summary.md").read_text()
    assert [m for m in re.findall(r"^\| (\d) \| (?:★ )?(\S+) \|", md, re.M)] == [(str(r["rank"]), r["config"]) for r in rows]

    # The data: 60 categories, so chance is 1/60.
    import pandas as pd

    data = pd.read_csv(runs / "data" / "synthetic.csv.gz", dtype=str, keep_default_na=False)
    assert data["category"].nunique() == CATEGORIES and len(data) == DEMO_ROWS

    # make predict on a few of the demo's titles, with its best run: the true categories, far above chance.
    titles = tmp_path / "titles.csv"
    data.head(20)[["title"]].to_csv(titles, index=False)
    proc = make("predict", "SWEEP=demo", f"INPUT={titles}", f"RUNS={runs}", "TOP_K=2", timeout=300)
    out = runs / "sweeps" / "demo" / "predictions.csv"
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    with open(out) as f:
        predicted = list(csv.DictReader(f))
    assert [r["title"] for r in predicted] == data.head(20)["title"].tolist()
    agree = sum(r["category"] == c for r, c in zip(predicted, data.head(20)["category"])) / 20
    assert agree > 10 / CATEGORIES, agree

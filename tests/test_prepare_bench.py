"""The prepare bench: its data, one real run of each worker count, and the arithmetic of its summary.

Benchmarks print figures; nothing here asserts a timing.
"""

import numpy as np
import pytest

from job import prepare_bench as pb
from job import text


def test_titles_are_synths_kind_and_their_words_keep_growing():
    a, b = pb.make_titles(4000, categories=40), pb.make_titles(4000, categories=40)
    assert a.equals(b)  # seeded
    assert list(a.columns) == ["title", "label_quality", "language", "category"] and a["category"].nunique() == 40
    stop = text.stopwords("spanish")
    tokens = [text.tokenize(t, stop) for t in a["title"]]
    assert all(tokens) and 3 < np.mean([len(t) for t in tokens]) < 8
    assert a["title"].str.contains("<").any() and a["title"].str.isupper().any()  # HTML and capitals to clean

    def distinct(frame):
        return len({w for t in frame["title"] for w in text.tokenize(t, stop)})

    big = pb.make_titles(40_000, categories=40)
    assert distinct(big) > distinct(big.head(10_000)) * 1.1  # the rare words: not a vocabulary fixed from the start


@pytest.mark.slow
def test_runs_of_1_and_2_workers_are_watched_phase_by_phase_and_write_the_same_bytes(tmp_path):
    data, vectors = tmp_path / "t.csv.gz", tmp_path / "v.txt.gz"
    pb.make_titles(6000, categories=30).to_csv(data, index=False)
    pb.write_vectors(vectors, lines=3000, dim=8)
    runs = [pb.run_prepare(data, vectors, tmp_path / f"out{workers}", workers, vector_lines=3000) for workers in (1, 2)]
    assert [p["phase"] for p in runs[0]["phases"]] == ["read and tokenize", "split", "vocabulary", "encode", "embeddings", "write"]
    for run in runs:
        assert run["rows"] == 6000 and 0 < sum(p["seconds"] for p in run["phases"]) < run["wall"]
        assert 0 < max(p["peak"] for p in run["phases"]) <= run["peak"] and run["disk"] > data.stat().st_size
    assert runs[0]["worker_cpu"] == 0 < runs[0]["main_cpu"]  # 1 worker: tokenized in the step's own process
    assert runs[1]["worker_cpu"] > 0  # 2 workers: in a pool, seen from outside before it exits
    table = pb.phase_table(runs)
    assert "1 worker:" in table and "2 workers:" in table and "whole step" in table
    assert "6,000 rows: output of 1, 2 workers byte for byte the same: yes" in pb.summary({6000: runs})


def _run(rows, workers, main_cpu, worker_cpu, peak, disk=0):
    phases = [{"phase": "read and tokenize", "seconds": 10.0, "peak": peak},
              {"phase": "vocabulary", "seconds": 1.0, "peak": peak},
              {"phase": "embeddings", "seconds": 5.0, "peak": peak}]
    return {"rows": rows, "workers": workers, "phases": phases, "wall": 20.0, "peak": peak, "disk": disk,
            "main_cpu": main_cpu, "worker_cpu": worker_cpu, "vector_lines": 100_000,
            "files": {"tokens_train.npy": {"bytes": 16 * rows, "sha256": "x"}}}


def test_summary_and_extrapolation_arithmetic():
    mb = 2**20
    small, large = _run(10**6, 2, 4.0, 12.0, 280 * mb, 10**8), _run(4 * 10**6, 2, 16.0, 48.0, 310 * mb, 4 * 10**8)
    pod = _run(10**6, 8, 4.0, 12.0, 620 * mb)
    one = dict(_run(10**6, 1, 16.0, 0.0, 190 * mb), phases=[dict(p, seconds=20.0) for p in small["phases"]])
    lines = pb.summary({10**6: [one, small], 4 * 10**6: [dict(one, rows=4 * 10**6), large]})
    assert "2 workers over 1: read and tokenize 2.00x, whole step 1.00x" in lines[0]
    assert "CPU of every process: 1 worker 16.0 s, 2 workers 16.0 s (1.00x)" in lines[1]
    assert any("peak memory 4,000,000 / 1,000,000 rows, 2 workers: 310 / 280 MB = 1.11x" in line and "PASS" in line for line in lines)
    assert any("1 worker: 190 / 190 MB = 1.00x" in line for line in lines)
    text = "\n".join(pb.extrapolate(small, large, pod))
    # read and tokenize: max(16, (16 + 48) / 8) x (20 M / 4 M) = 80 s; vocabulary 1 s x 5; 1,000,000 lines at 20,000/s
    assert "read and tokenize 80 s, vocabulary 5 s, embeddings 50 s" in text
    assert "read and tokenize on 2 / 4 / 8 cores: 160 / 80 / 80 s; past 4.0 cores the one merging process is the limit" in text
    # 620 MB at 1 M rows, + 30 MB per 3 M rows up to 20 M rows: 620 + 190 = 810 MB
    assert f"= {810 / 1024:.2f} GiB" in text
    assert f"{4 * 10**8 / (4 * 10**6) * 20_000_000 / 2**30:.1f} GiB" in text  # the most staging held at once, per row

"""What prepare and train write to their pod's /tmp, measured, and extrapolated to the course's 4.9 M rows.

    python -m job.disk_bench                 # make bench-disk: 100,000 and 400,000 synthetic rows
    python -m job.disk_bench --rows 50000,200000

Each step runs as in its pod: its input and output in S3 (a moto server on 127.0.0.1, as the tests
start it), TMPDIR, HOME and the caches in a fresh folder that stands for the pod's /tmp emptyDir. A
thread samples the folder's size every 20 ms; the figure is the peak. From two sizes of synthetic
data it fits bytes = fixed + per-row x rows for each step and prints the extrapolation to 4.9 M rows.
What the synthetic data cannot show is added by name: the word-vector file prepare downloads into
/tmp as it is (`--embeddings none` here, so none is downloaded). These figures size the /tmp limits
and ephemeral-storage requests in workflows/dag.py (Options: prepare_tmp_size, train_tmp_size).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COURSE_ROWS = 4_900_000  # the course dataset's titles
TRAIN_SPEC = "hidden100:epochs=1,max_train_rows=2000"  # the checkpoint's size depends on the vocabulary, not the rows
TFIDF_SPEC = "tfidf:epochs=1,max_train_rows=2000"
SAMPLE_S = 0.02


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass  # written and removed between the listing and the stat
    return total


def peak_tmp(argv: list[str], env: dict) -> tuple[int, float]:
    """Run `python -m job ...` with a fresh /tmp stand-in; (peak bytes under it, seconds)."""
    tmp = Path(tempfile.mkdtemp(prefix="meli-disk-"))
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_bytes(tmp))
            time.sleep(SAMPLE_S)

    pod_env = {**env, "TMPDIR": str(tmp), "HOME": str(tmp), "XDG_CACHE_HOME": f"{tmp}/.cache",
               "MPLCONFIGDIR": f"{tmp}/matplotlib"}
    watcher = threading.Thread(target=sample, daemon=True)
    start = time.time()
    watcher.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "job", *argv], env=pod_env, capture_output=True, text=True)
    finally:
        done.set()
        watcher.join()
    peak[0] = max(peak[0], _tree_bytes(tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"python -m job {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return peak[0], time.time() - start


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start (pip install 'moto[server]')")


def measure(rows: int, env: dict, work: Path) -> dict:
    local = work / f"synthetic-{rows}.csv.gz"
    subprocess.run([sys.executable, "-m", "job", "synth", "--rows", str(rows), "--out", str(local)], env=env, check=True,
                   capture_output=True)
    data = f"s3://bench/data/synthetic-{rows}.csv.gz"
    _s3(env).upload_file(str(local), "bench", data.split("/", 3)[3])
    out = f"s3://bench/out-{rows}"
    result = work / f"prepared-{rows}"
    prepare, prepare_s = peak_tmp(["prepare", "--data", data, "--embeddings", "none", "--out", out,
                                   "--result-file", str(result)], env)
    prepared = result.read_text().strip()
    train, train_s = peak_tmp(["train", "--config", TRAIN_SPEC, "--prepared", prepared, "--out", f"{out}/sweeps/b/nn",
                               "--sweep", "b"], env)
    tfidf, tfidf_s = peak_tmp(["train", "--config", TFIDF_SPEC, "--prepared", prepared, "--out", f"{out}/sweeps/b/tfidf",
                               "--sweep", "b"], env)
    return {"rows": rows, "input": local.stat().st_size, "prepare": prepare, "train": train, "tfidf": tfidf,
            "seconds": (prepare_s, train_s, tfidf_s)}


def _s3(env: dict):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _fit(a: dict, b: dict, key: str) -> tuple[float, float]:
    per_row = (b[key] - a[key]) / (b["rows"] - a["rows"])
    return a[key] - per_row * a["rows"], per_row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m job.disk_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="100000,400000", help="two synthetic sizes, comma-separated (default: 100000,400000)")
    args = p.parse_args(argv)
    sizes = sorted(int(r) for r in args.rows.split(","))
    if len(sizes) != 2:
        raise SystemExit("--rows: give two sizes")
    moto, url = _moto()
    env = {**os.environ, "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1"}
    work = Path(tempfile.mkdtemp(prefix="meli-disk-bench-"))
    try:
        _s3(env).create_bucket(Bucket="bench")
        results = [measure(rows, env, work) for rows in sizes]
    finally:
        moto.terminate()
        shutil.rmtree(work, ignore_errors=True)
    mib = 2**20
    print(f"{'rows':>9} {'input file':>11} {'prepare /tmp':>13} {'train /tmp':>11} {'tfidf /tmp':>11}   (peak MiB; seconds)")
    for r in results:
        print(f"{r['rows']:>9,} {r['input'] / mib:>11.1f} {r['prepare'] / mib:>13.1f} {r['train'] / mib:>11.1f} "
              f"{r['tfidf'] / mib:>11.1f}   {', '.join(f'{s:.0f}' for s in r['seconds'])}")
    a, b = results
    print(f"ratio {b['rows'] / a['rows']:.1f}x rows: prepare {b['prepare'] / a['prepare']:.2f}x, "
          f"train {b['train'] / a['train']:.2f}x, tfidf {b['tfidf'] / a['tfidf']:.2f}x")
    print(f"extrapolated to {COURSE_ROWS:,} rows (fixed + per row; add the word-vector file's size to prepare):")
    for key in ("input", "prepare", "train", "tfidf"):
        fixed, per_row = _fit(a, b, key)
        print(f"  {key:>8}: {(fixed + per_row * COURSE_ROWS) / 2**30:6.2f} GiB   ({fixed / mib:.0f} MiB + {per_row:.0f} B/row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

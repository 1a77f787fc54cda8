"""Prepare at scale: each phase's time and memory at 1 M and 4 M rows, on 1 and 2 workers, side by side.

    python -m job bench --prepare [--rows N]
    make bench-prepare [BENCH_PREPARE_ARGS="--rows 200000"]

Each run is `python -m job prepare --workers W` in a child process, on synthetic titles in 632
categories and a 300-d word-vector file (gz) that covers the vocabulary among other words, as a real
one does. prepare measures nothing: the bench watches it from outside. Every SAMPLE_SECONDS it reads
the memory of the process and its workers (the sum of their proportional set sizes, so pages a fork
shares count once), their CPU time, and the bytes under the output folder (staging included); the
log line that ends each phase splits the samples into phases. Printed:
  - per phase and run (the fastest of 2 to 6 runs, alternating between the worker counts): seconds,
    rows/s (lines/s for the vector file), and the peak memory of the whole process tree;
  - the speed-up of 2 workers over 1 (read and tokenize, and in all), what tokenizing cost in CPU, the
    growth of peak memory from the smallest to the largest row count, whether every run wrote the same bytes;
  - memory with 8 workers (POD_CORES), measured at the smallest row count (its time means nothing
    on fewer cores), and the same titles as the course's jsonl.gz (token lists and all) on 2 workers;
  - the vector file parsed the previous way (every line split) and this way (words outside the
    vocabulary skipped), in lines/s;
  - the time, memory and staging disk extrapolated to FULL_ROWS rows on a POD_CORES-core pod.

The titles are drawn like job.synth's (its word pools, departments of four, Zipf class sizes,
stopwords, digits and units, HTML, capitals and punctuation), vectorized: synth's per-row loop
takes 15 minutes for 4 M rows. A share of titles also carries a rare word (a typo, a model name)
from a Zipf law over an unbounded set, so the number of distinct words grows with the rows, as in
real data, where synth's stays fixed. Timings are wall clock on whatever else the machine runs:
the load average is printed beside them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from job import embeddings as emb
from job import prepare, synth
from job.errors import UserError

ROWS = (1_000_000, 4_000_000)  # row counts measured when --rows is not given
CATEGORIES = 632  # the course's Spanish subset
WORKERS = (1, 2)  # worker counts compared at every row count
POD_CORES = 8  # the pod the figures are extrapolated to; its worker count's memory is measured too
FULL_ROWS = 20_000_000  # the whole challenge file (two languages)
CORE_COUNTS = (2, 4, POD_CORES)  # pods the read-and-tokenize time is extrapolated to, side by side
RARE_SHARE = 0.3  # titles that carry one rare word
RARE_ZIPF = 1.2  # Zipf exponent of the rare words: distinct ones grow about as rows ** (1 / 1.2)
VECTOR_LINES = 100_000  # lines of the bench's vector file (the vocabulary and other words)
VECTOR_DIM = 300  # the SBW vectors' dimension
FULL_VECTOR_LINES = 1_000_000  # SBW-vectors-300-min5.txt.gz holds about 1 M words: the extrapolated parse time
REPEATS = 2  # runs of each worker count per row count at least, alternating; the fastest is shown ...
MIN_SECONDS = 180  # ... and more pairs until a row count has run this long (short runs get more tries): this
#   machine's speed drifts by up to 2x over minutes (a fixed CPU loop took 3.4 to 6.7 s), its two cores slow
#   each other by 1.0x to 1.4x from one minute to the next (a 32 MB array copy: 1.3x), and the fastest try is
#   the one least slowed by either
MAX_REPEATS = 6  # the most runs of each worker count per row count
TARGET_MEMORY_GROWTH = 1.3  # the target: peak memory at the largest row count / at the smallest
SAMPLE_SECONDS = 0.05  # how often the running step's memory, CPU and disk are read
SEED = 0


# --- data ----------------------------------------------------------------------------------


def _rare_words(ranks: np.ndarray) -> np.ndarray:
    """A distinct made-up word per rank (2+ syllables of synth's onsets and vowels), as an object array."""
    onsets, vowels = synth._ONSETS, synth._VOWELS
    base = len(onsets) * len(vowels)
    unique, inverse = np.unique(ranks, return_inverse=True)
    words = []
    for r in unique.tolist():
        syllables = []
        while r or len(syllables) < 2:
            r, d = divmod(r, base)
            syllables.append(onsets[d % len(onsets)] + vowels[d // len(onsets)])
        words.append("".join(syllables))
    return np.asarray(words, dtype=object)[inverse]


def _pick(rng: np.random.Generator, words: list[str], n: int, p: np.ndarray | None = None) -> np.ndarray:
    return np.asarray(words, dtype=object)[rng.choice(len(words), size=n, p=p)]


def _pools(rng: np.random.Generator, categories: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """synth's word pools: (department words [depts, 40], category words [categories, 24], brands)."""
    taken: set[str] = set(synth._STOP) | set(synth._GENERIC)
    depts = (categories + synth.DEPARTMENT_SIZE - 1) // synth.DEPARTMENT_SIZE
    dept_words = np.asarray([synth._words(rng, synth.DEPARTMENT_WORDS, taken) for _ in range(depts)], dtype=object)
    cat_words = np.asarray([synth._words(rng, synth.CATEGORY_WORDS, taken) for _ in range(categories)], dtype=object)
    return dept_words, cat_words, [w.capitalize() for w in synth._words(rng, 60, taken)]


def make_titles(rows: int, categories: int = CATEGORIES, seed: int = SEED):
    """Rows of (title, label_quality, language, category) in synth's style, drawn column-wise."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    dept_words, cat_words, brands = _pools(rng, categories)
    names = np.asarray(["_".join(w.upper() for w in cat_words[c][:2]) for c in range(categories)], dtype=object)
    label = rng.choice(categories, size=rows, p=synth.zipf(categories, 0.8)[rng.permutation(categories)])
    dept = label // synth.DEPARTMENT_SIZE
    empty = np.full(rows, "", dtype=object)
    columns = []
    for slot in range(4):  # 2-4 of the category's words, one in ten a sibling's
        sibling = np.minimum(dept * synth.DEPARTMENT_SIZE + rng.integers(0, synth.DEPARTMENT_SIZE, rows), categories - 1)
        source = np.where(rng.random(rows) < synth.BORROWED_SHARE, sibling, label)
        word = cat_words[source, rng.choice(synth.CATEGORY_WORDS, size=rows, p=synth.zipf(synth.CATEGORY_WORDS, 1.0))]
        columns.append(word if slot < 2 else np.where(rng.integers(2, 5, rows) > slot, word, empty))
    dept_word = dept_words[dept, rng.choice(synth.DEPARTMENT_WORDS, size=rows, p=synth.zipf(synth.DEPARTMENT_WORDS, 0.7))]
    columns.append(np.where(rng.random(rows) < 0.5, dept_word, empty))
    columns.append(np.where(rng.random(rows) < 0.6, _pick(rng, brands, rows), empty))
    columns.append(np.where(rng.random(rows) < 0.5, _pick(rng, synth._GENERIC, rows), empty))
    for _ in range(2):
        columns.append(np.where(rng.random(rows) < 0.5, _pick(rng, synth._STOP, rows), empty))
    units = _pick(rng, synth._UNITS, rows)
    numbers = rng.integers(1, 1000, rows).astype(str).astype(object) + units
    columns.append(np.where(rng.random(rows) < 0.4, numbers, empty))
    columns.append(np.where(rng.random(rows) < RARE_SHARE, _rare_words(rng.zipf(RARE_ZIPF, rows)), empty))
    titles = [" ".join(w for w in parts if w) for parts in zip(*columns)]
    style = rng.random(rows)
    html = rng.integers(0, 3, rows) * 2
    punct = _pick(rng, ["!", "!!", " -", ".", " *"], rows)
    for i in np.flatnonzero(style < 0.05).tolist():
        titles[i] = f"{synth._HTML[html[i]]}{titles[i]}{synth._HTML[html[i] + 1]}"
    for i in np.flatnonzero((style >= 0.05) & (style < 0.25)).tolist():
        titles[i] = titles[i].upper()
    for i in np.flatnonzero((style >= 0.25) & (style < 0.49)).tolist():
        titles[i] = titles[i][:1].upper() + titles[i][1:] + punct[i]
    quality = np.where(rng.random(rows) < synth.UNRELIABLE_SHARE, "unreliable", "reliable")
    return pd.DataFrame({"title": titles, "label_quality": quality, "language": "spanish", "category": names[label]})


def write_titles(path: Path, rows: int) -> None:
    # gzip level 1: the bench's time goes to prepare, not to compressing its input
    make_titles(rows).to_csv(path, index=False, compression={"method": "gzip", "compresslevel": 1, "mtime": 0})


def write_course_jsonl(path: Path, rows: int) -> None:
    """The same titles as the course's jsonl.gz records: split 80/10/10, and the token list and ids each carries."""
    frame = make_titles(rows)
    split = np.asarray(["train", "validation", "test"])[np.random.default_rng(SEED).choice(3, size=rows, p=[0.8, 0.1, 0.1])]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        for title, quality, category, s in zip(frame["title"], frame["label_quality"], frame["category"], split):
            tokens = title.lower().split()
            f.write(json.dumps({"language": "spanish", "label_quality": quality, "title": title, "category": category,
                                "split": s, "tokenized_title": tokens, "data": list(range(2, 2 + len(tokens))),
                                "target": 0, "n_labels": CATEGORIES, "size": len(tokens)}, ensure_ascii=False) + "\n")


def write_vectors(path: Path, lines: int = VECTOR_LINES, dim: int = VECTOR_DIM, seed: int = SEED) -> None:
    """A text vector file with a `count dim` header: synth's words, the commoner rare words, and other words."""
    rng = np.random.default_rng(seed)
    dept_words, cat_words, brands = _pools(rng, CATEGORIES)
    words = list(dept_words.ravel()) + list(cat_words.ravel()) + [b.lower() for b in brands]
    words += list(_rare_words(np.arange(1, 40_001)))
    words += [f"zq{w}" for w in _rare_words(np.arange(1, max(0, lines - len(words)) + 1))]  # never in a title
    words = [words[i] for i in rng.permutation(len(words))][:lines]
    values = [f"{x:.6f}" for x in rng.standard_normal(4096)]
    picks = rng.integers(0, len(values), size=(len(words), dim), dtype=np.int16)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        f.write(f"{len(words)} {dim}\n")
        for word, row in zip(words, picks):
            f.write(word + " " + " ".join([values[j] for j in row.tolist()]) + "\n")


# --- running prepare, watched from outside --------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Linux: each thread's /proc children list)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # gone meanwhile
                pass
    return found


def _sample(pid: int) -> tuple[int, float, float]:
    """(bytes: the tree's proportional set size; CPU seconds of pid; CPU seconds of its descendants, those it has
    waited for included) now."""
    memory, cpu, waited = 0, {}, 0.0
    for p in _tree(pid):
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        memory += 1024 * int(rollup.split("Pss:", 1)[1].split()[0])
        ticks = [int(f) / os.sysconf("SC_CLK_TCK") for f in fields[11:15]]  # utime, stime, cutime, cstime
        cpu[p] = ticks[0] + ticks[1]
        waited += ticks[2] + ticks[3] if p == pid else 0.0
    return memory, cpu.pop(pid, 0.0), sum(cpu.values()) + waited


def _disk(folder: Path) -> int:
    """Bytes of the files under folder now (staging included)."""
    total = 0
    for root, _, names in os.walk(folder):  # a folder removed meanwhile is skipped
        for name in names:
            with contextlib.suppress(OSError):  # a file moved or removed meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


def watch(command: list[str], out: Path) -> dict:
    """Run the command, sampling it every SAMPLE_SECONDS; the time of each line it logs, and the samples."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.perf_counter(), line) for line in proc.stderr))
    started = time.perf_counter()
    reader.start()
    samples = []
    while proc.poll() is None:
        samples.append((time.perf_counter(), *_sample(proc.pid), _disk(out)))
        time.sleep(SAMPLE_SECONDS)
    stdout = proc.stdout.read()
    reader.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise UserError(f"bench: {' '.join(command[1:])} exited {proc.returncode}: {''.join(l for _, l in lines)[-300:]}")
    return {"wall": wall, "lines": lines, "samples": samples, "stdout": stdout}


def run_prepare(data: Path, vectors: Path, out: Path, workers: int, vector_lines: int = VECTOR_LINES) -> dict:
    """`python -m job prepare` in a child process, watched: per phase its seconds and peak memory; the CPU of the
    first phase in the step's process (its start-up included) and in the workers; the step's wall time, the most
    bytes its output folder held (staging included), and its files' hashes."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "job", "prepare", "--data", str(data), "--embeddings", str(vectors),
               "--out", str(out), "--workers", str(workers),
               "--allow-low-coverage"]  # small benches cover little of the vocabulary; speed is what is measured
    seen = watch(command, out)
    ends = {}
    for at, line in seen["lines"]:
        for name in prepare.PHASES:
            if f"job.prepare: {name}: done in " in line:
                ends[name] = (at, float(line.rsplit("done in ", 1)[1].split()[0]))
    if list(ends) != list(prepare.PHASES):
        raise UserError(f"bench: prepare logged the ends of {list(ends)}, not of every phase {list(prepare.PHASES)}")
    phases, begin, samples = [], 0.0, seen["samples"]
    for name, (end, seconds) in ends.items():
        during = [s for s in samples if begin <= s[0] <= end] or [min(samples, key=lambda s: abs(s[0] - end))]
        phases.append({"phase": name, "seconds": seconds, "peak": max(s[1] for s in during)})
        if name == "read and tokenize":  # the first sample after it (the pool is gone): CPU here and in the workers
            main_cpu, worker_cpu = min((s for s in samples if s[0] >= end), key=lambda s: s[0], default=samples[-1])[2:4]
        begin = end
    prepared = Path(seen["stdout"].strip().splitlines()[-1])
    report = json.loads((prepared / "report.json").read_text())
    return {"workers": workers, "rows": report["rows_read"], "vector_lines": vector_lines, "phases": phases,
            "wall": seen["wall"], "peak": max(s[1] for s in samples), "disk": max(s[4] for s in samples),
            "main_cpu": main_cpu, "worker_cpu": worker_cpu,
            "files": json.loads((prepared / "manifest.json").read_text())["files"],  # bytes and sha256 of each
            "vocab": json.loads((prepared / "vocab.json").read_text(encoding="utf-8"))}


def phase(result: dict, name: str) -> dict:
    return next(p for p in result["phases"] if p["phase"] == name)


# --- the old way of reading a vector file, for comparison --------------------------------------


def parse_every_line(path: Path, vocab: dict[str, int]) -> int:
    """The vector file as the previous parser read it: each line decoded, split into its values, then looked up."""
    found = 0
    with io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="\n") as f:
        for line in f:
            parts = line.rstrip("\n\r ").split(" ")
            if len(parts) > 2 and parts[0] in vocab:
                np.asarray(parts[1:], dtype=np.float32)
                found += 1
    return found


def parse_rates(path: Path, vocab: dict[str, int], lines: int) -> tuple[float, float]:
    """(lines/s split every line, lines/s skipping words outside the vocabulary), each the best of two."""
    rates = []
    for parse in (lambda: parse_every_line(path, vocab), lambda: emb.load_text(path, path.name, vocab)):
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            parse()
            best = min(best, time.perf_counter() - started)
        rates.append(lines / best)
    return rates[0], rates[1]


# --- printing ------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _rate(result: dict, p: dict) -> str:
    """Rows per second, or the vector file's lines per second; blank for the write."""
    count = {"embeddings": result["vector_lines"], "write": 0}.get(p["phase"], result["rows"])
    return f"{count / max(p['seconds'], 1e-9):,.0f}" if count else ""


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def phase_table(results: list[dict]) -> str:
    """One row per phase, and per run its seconds, its rate per second and the process tree's peak memory."""
    rows = [["", ""] + sum(([f"{r['workers']} worker{'s' * (r['workers'] > 1)}:", "", ""] for r in results), []),
            ["phase", "per s"] + ["s", "per s", "peak MB"] * len(results)]
    for i, first in enumerate(results[0]["phases"]):
        row = [first["phase"], {"embeddings": "lines", "write": ""}.get(first["phase"], "rows")]
        for r in results:
            p = r["phases"][i]
            row += [f"{p['seconds']:.1f}", _rate(r, p), _mb(p["peak"])]
        rows.append(row)
    step = ["whole step (python -m job prepare)", "rows"]
    cpu = ["read and tokenize, CPU s: main + workers", ""]
    load = ["load average after the run", ""]
    for r in results:
        step += [f"{r['wall']:.1f}", f"{r['rows'] / r['wall']:,.0f}", _mb(r["peak"])]
        cpu += ["", "", f"{r['main_cpu']:.1f} + {r['worker_cpu']:.1f}"]
        load += [r.get("load", ""), "", ""]
    lines = _align(rows + [step, cpu, load])
    lines.insert(2, "-" * len(lines[1]))
    return "\n".join(lines)


def summary(by_size: dict[int, list[dict]]) -> list[str]:
    """Speed-up of 2 workers over 1, peak memory growth, and whether every run wrote the same bytes."""
    out = []
    sizes = sorted(by_size)
    for rows in sizes:
        runs = {r["workers"]: r for r in by_size[rows]}
        if 1 in runs and 2 in runs:
            one, two = phase(runs[1], "read and tokenize")["seconds"], phase(runs[2], "read and tokenize")["seconds"]
            tries = {w: runs[w].get("tries") or [phase(runs[w], "read and tokenize")["seconds"]] for w in (1, 2)}
            spread = "; ".join(f"{w} worker{'s' * (w > 1)}: {len(t)} tries, {t[0]:.1f}..{t[-1]:.1f} s" for w, t in tries.items())
            out.append(f"{rows:,} rows: 2 workers over 1: read and tokenize {one / two:.2f}x, "
                       f"whole step {runs[1]['wall'] / runs[2]['wall']:.2f}x ({spread})")
            cpu = {w: runs[w]["main_cpu"] + runs[w]["worker_cpu"] for w in (1, 2)}
            out.append(f"{rows:,} rows: read and tokenize, CPU of every process: 1 worker {cpu[1]:.1f} s, "
                       f"2 workers {cpu[2]:.1f} s ({cpu[2] / cpu[1]:.2f}x)")
        same = len({json.dumps(r["files"], sort_keys=True) for r in by_size[rows]}) == 1
        counts = ", ".join(str(w) for w in sorted(runs))
        out.append(f"{rows:,} rows: output of {counts} workers byte for byte the same: {'yes' if same else 'NO'}")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for workers in WORKERS:
            a = next(r for r in by_size[small] if r["workers"] == workers)
            b = next(r for r in by_size[large] if r["workers"] == workers)
            growth = b["peak"] / a["peak"]
            out.append(f"peak memory {large:,} / {small:,} rows, {workers} worker{'s' * (workers > 1)}: "
                       f"{_mb(b['peak'])} / {_mb(a['peak'])} MB = {growth:.2f}x (target <= {TARGET_MEMORY_GROWTH}x) "
                       f"{'PASS' if growth <= TARGET_MEMORY_GROWTH else 'FAIL'}")
    return out


def extrapolate(small: dict, large: dict, pod: dict | None) -> list[str]:
    """FULL_ROWS rows on a POD_CORES-core pod: times from the largest run with 2 workers, memory from the pod-sized run."""
    scale = FULL_ROWS / large["rows"]
    main_cpu, worker_cpu = large["main_cpu"], large["worker_cpu"]

    def tokenize_seconds(cores: int) -> float:
        return max(main_cpu, (main_cpu + worker_cpu) / cores) * scale

    seconds = {"read and tokenize": tokenize_seconds(POD_CORES)}
    vectors = phase(large, "embeddings")
    for p in large["phases"]:
        if p["phase"] == "embeddings":
            seconds[p["phase"]] = FULL_VECTOR_LINES / (large["vector_lines"] / p["seconds"])
        elif p["phase"] not in seconds:
            seconds[p["phase"]] = p["seconds"] * scale
    lines = [f"extrapolated to {FULL_ROWS:,} rows on a {POD_CORES}-core pod with {POD_CORES} workers:",
             "  time: read and tokenize = max(main process CPU, (main + workers' CPU) / cores), from the "
             f"{large['rows']:,}-row run with 2 workers ({main_cpu:.1f} s cutting and merging + {worker_cpu:.1f} s "
             f"in the workers, CPU), x {scale:g};",
             f"        a {FULL_VECTOR_LINES:,}-line vector file at the measured {large['vector_lines'] / vectors['seconds']:,.0f} "
             f"lines/s; the other phases x {scale:g} (one process)",
             "        " + ", ".join(f"{name} {s:,.0f} s" for name, s in seconds.items()) + f"; in all {sum(seconds.values()) / 60:.1f} min",
             "        read and tokenize on " + " / ".join(str(c) for c in CORE_COUNTS) + " cores: "
             + " / ".join(f"{tokenize_seconds(c):,.0f}" for c in CORE_COUNTS) + " s; past "
             f"{(main_cpu + worker_cpu) / max(main_cpu, 1e-9):.1f} cores the one merging process is the limit"]
    grown = large["rows"] - small["rows"]
    per_row = (large["peak"] - small["peak"]) / grown if grown else 0.0  # one row count: growth not measured
    if pod is not None:
        memory = pod["peak"] + per_row * (FULL_ROWS - pod["rows"])
        lines.append(f"  memory: {_mb(pod['peak'])} MB measured with {POD_CORES} workers at {pod['rows']:,} rows, "
                     f"+ {per_row:.1f} bytes per row (the growth from {small['rows']:,} to {large['rows']:,} rows) "
                     f"= {memory / 2**30:.2f} GiB")
    lines.append(f"  local disk for staging (the input decompressed, the spool, the arrays before they move; the most "
                 f"at once): {large['disk'] / large['rows'] * FULL_ROWS / 2**30:.1f} GiB")
    return lines


# --- the step --------------------------------------------------------------------------------


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def course_line(rows: int, work: Path, vectors: Path) -> str:
    """The course's jsonl.gz form of the same titles, with 2 workers: its rate and peak memory."""
    data = work / f"course-{rows}.jsonl.gz"
    write_course_jsonl(data, rows)
    run = run_prepare(data, vectors, work / "out-course", 2)
    data.unlink()
    subprocess.run(["rm", "-rf", str(work / "out-course")], check=True)
    tokenize = phase(run, "read and tokenize")
    return (f"\ncourse jsonl.gz, {rows:,} rows, 2 workers: read and tokenize {tokenize['seconds']:.1f} s "
            f"({rows / tokenize['seconds']:,.0f} rows/s), whole step {run['wall']:.1f} s, peak {_mb(run['peak'])} MB")


def _measure(rows: int, work: Path, vectors: Path, pod: bool) -> list[dict]:
    data = work / f"titles-{rows}.csv.gz"
    started = time.perf_counter()
    write_titles(data, rows)
    print(f"\n{rows:,} rows: data made in {time.perf_counter() - started:.0f} s ({data.stat().st_size / 2**20:,.0f} MB csv.gz); "
          f"load average {_load()}", flush=True)
    runs: dict[int, list[dict]] = {}
    started = time.perf_counter()

    def run(i: int, workers: int) -> None:
        out = work / f"out-{rows}-{i}"
        result = run_prepare(data, vectors, out, workers)
        result["load"] = _load()
        subprocess.run(["rm", "-rf", str(out)], check=True)
        runs.setdefault(workers, []).append(result)

    pairs = 0  # 1, 2, 1, 2, ...: other load and the machine's drift hit both counts alike
    while pairs < REPEATS or (time.perf_counter() - started < MIN_SECONDS and pairs < MAX_REPEATS):
        for workers in WORKERS:
            run(pairs * len(WORKERS) + workers, workers)
        pairs += 1
    if pod:
        run(-1, POD_CORES)
    data.unlink()
    for workers, tries in runs.items():
        if len({json.dumps(r["files"], sort_keys=True) for r in tries}) > 1:
            raise UserError(f"bench: {rows:,} rows, {workers} workers: two runs wrote different bytes")
    # the fastest try of each count stands for it (the others lost time to other work on the machine)
    fastest = []
    for tries in runs.values():
        best = min(tries, key=lambda r: phase(r, "read and tokenize")["seconds"])
        best["tries"] = sorted(phase(r, "read and tokenize")["seconds"] for r in tries)
        fastest.append(best)
    return fastest


def main(args) -> int:
    sizes = (args.rows,) if args.rows else ROWS
    if min(sizes) < 10_000:
        raise UserError(f"--rows {min(sizes)}: use at least 10000")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"bench prepare: {', '.join(f'{n:,}' for n in sizes)} synthetic rows in {CATEGORIES} categories, "
          f"a {VECTOR_LINES:,}-line {VECTOR_DIM}-d vector file (gz); {cores} usable CPU cores; load average {_load()}; "
          f"each worker count run {REPEATS} to {MAX_REPEATS} times, alternating, the fastest shown", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meli-bench-prepare-") as tmp:
        work = Path(tmp)
        vectors = work / "vectors.txt.gz"
        write_vectors(vectors)
        by_size = {}
        for rows in sizes:
            by_size[rows] = _measure(rows, work, vectors, pod=rows == min(sizes))
            print(phase_table([r for r in by_size[rows] if r["workers"] in WORKERS]), flush=True)
        pod = next((r for r in by_size[min(sizes)] if r["workers"] == POD_CORES), None)
        if pod is not None:
            print(f"\n{POD_CORES} workers at {pod['rows']:,} rows (memory only; {cores} cores): whole step, peak "
                  f"{_mb(pod['peak'])} MB (read and tokenize {_mb(phase(pod, 'read and tokenize')['peak'])} MB)", flush=True)
        print(course_line(min(sizes), work, vectors), flush=True)
        vocab = {w: i for i, w in enumerate(by_size[min(sizes)][0]["vocab"])}
        old, new = parse_rates(vectors, vocab, VECTOR_LINES)
        print(f"\nvector file, {VECTOR_LINES:,} lines, {len(vocab):,}-word vocabulary: every line split {old:,.0f} lines/s, "
              f"words outside the vocabulary skipped {new:,.0f} lines/s ({new / old:.2f}x)")
    print()
    for line in summary(by_size):
        print(line)
    small, large = by_size[min(sizes)], by_size[max(sizes)]
    two = lambda runs: next(r for r in runs if r["workers"] == 2)  # noqa: E731
    print()
    for line in extrapolate(two(small), two(large), pod):
        print(line)
    print(f"\nload average at the end {_load()}; total {time.perf_counter() - started:.0f} s")
    return 0

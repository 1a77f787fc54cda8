"""Bad input is refused in one clear line, or skipped and counted: never a traceback, never silent loss.

The corpus lives in tests/bad_inputs/ (small files; the two that would be megabytes are made here).
Each refused case runs the real command line in this process and must exit non-zero with exactly
one `error:` line that names the input, and no traceback. Each skipped case must prepare the data
and count what it dropped in report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.__main__ import main

CORPUS = Path(__file__).parent / "bad_inputs"
GOOD = str(CORPUS / "good.csv")
VECTORS = str(CORPUS / "vectors_ok.txt")


def prepare(data: str, out: Path, embeddings: str = "none") -> list[str]:
    return ["prepare", "--data", data, "--embeddings", embeddings, "--embedding-dim", "8", "--out", str(out)]


def corpus(name: str) -> str:
    return str(CORPUS / name)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The inputs too big to commit: a 1.5 MiB line with no newline, and a 100,000-character title."""
    d = tmp_path_factory.mktemp("made")
    (d / "huge_line.csv").write_bytes(b"title" + b"x" * (3 << 19))
    good = (CORPUS / "good.csv").read_text()
    (d / "huge_title.csv").write_text(good + "celular " + "pantalla " * 11_000 + ",reliable,spanish,CELLPHONES\n")
    return d


# (case id, argv builder(tmp, made), text the error line must hold, the input it must name)
REFUSED = [
    ("wrong delimiter ;", lambda t, m: prepare(corpus("semicolon.csv"), t), "';' or tab separated", "semicolon.csv"),
    ("wrong delimiter tab", lambda t, m: prepare(corpus("tabs.csv"), t), "';' or tab separated", "tabs.csv"),
    ("missing column", lambda t, m: prepare(corpus("missing_category.csv"), t), "missing column(s) category", "missing_category.csv"),
    ("duplicate column", lambda t, m: prepare(corpus("duplicate_columns.csv"), t), "duplicate column(s) category", "duplicate_columns.csv"),
    ("binary garbage", lambda t, m: prepare(corpus("binary.csv"), t), "not UTF-8", "binary.csv"),
    ("invalid UTF-8 row", lambda t, m: prepare(corpus("invalid_utf8.csv"), t), "not UTF-8", "invalid_utf8.csv"),
    ("truncated gzip", lambda t, m: prepare(corpus("truncated.csv.gz"), t), "truncated or corrupt", "truncated.csv.gz"),
    ("huge line", lambda t, m: prepare(str(m / "huge_line.csv"), t), "missing column(s)", "huge_line.csv"),
    ("empty file", lambda t, m: prepare(corpus("empty.csv"), t), "empty file", "empty.csv"),
    ("empty gzip", lambda t, m: prepare(corpus("empty.csv.gz"), t), "empty file", "empty.csv.gz"),
    ("header only", lambda t, m: prepare(corpus("header_only.csv"), t), "no data rows", "header_only.csv"),
    ("ragged row", lambda t, m: prepare(corpus("ragged.csv"), t), "malformed CSV", "ragged.csv"),
    ("unclosed quote", lambda t, m: prepare(corpus("unclosed_quote.csv"), t), "malformed CSV", "unclosed_quote.csv"),
    ("not JSON lines", lambda t, m: prepare(corpus("not_json.jsonl"), t), "malformed JSON lines", "not_json.jsonl"),
    ("unknown data format", lambda t, m: prepare(corpus("data.parquet"), t), "unknown data format", "data.parquet"),
    ("one category", lambda t, m: prepare(corpus("one_category.csv"), t), "at least 2 categories", "one_category.csv"),
    ("every title empty", lambda t, m: prepare(corpus("all_titles_empty.csv"), t), "no usable rows", "all_titles_empty.csv"),
    ("missing file", lambda t, m: prepare(str(t / "nope.csv"), t), "no such file", "nope.csv"),
    ("vectors: wrong dimension", lambda t, m: prepare(GOOD, t, corpus("vectors_wrong_dim.txt")), "dimension mismatch", "vectors_wrong_dim.txt"),
    ("vectors: garbage lines", lambda t, m: prepare(GOOD, t, corpus("vectors_garbage.txt")), "lines are malformed", "vectors_garbage.txt"),
    ("vectors: NaN and inf", lambda t, m: prepare(GOOD, t, corpus("vectors_nan.txt")), "lines are malformed", "vectors_nan.txt"),
    ("vectors: binary garbage", lambda t, m: prepare(GOOD, t, corpus("vectors_binary.txt")), "not UTF-8", "vectors_binary.txt"),
    ("vectors: broken .bin", lambda t, m: prepare(GOOD, t, corpus("vectors_bad.bin")), "not a word2vec binary", "vectors_bad.bin"),
    ("vectors: empty", lambda t, m: prepare(GOOD, t, corpus("vectors_empty.txt")), "no word vectors", "vectors_empty.txt"),
    ("vectors: unknown format", lambda t, m: prepare(GOOD, t, corpus("vectors.npy")), "unknown word-vector format", "vectors.npy"),
    ("spec: unknown key", lambda t, m: ["plan", "--configs", "hidden50:hiden=60"], "unknown key 'hiden'", "hidden50:hiden=60"),
    ("spec: bad value type", lambda t, m: ["plan", "--configs", "hidden50:hidden=big"], "not a valid int", "hidden50:hidden=big"),
    ("spec: bad range", lambda t, m: ["plan", "--configs", "hidden50:dropout=1.5"], "dropout=1.5", "dropout=1.5"),
    ("spec: path-like name", lambda t, m: ["plan", "--configs", "../x"], "unknown config '../x'", "../x"),
    ("spec: name with a slash", lambda t, m: ["plan", "--configs", "hidden50/../../x"], "unknown config", "hidden50/../../x"),
    ("spec: path-like value", lambda t, m: ["plan", "--configs", "hidden50:seed=../x"], "not a plain value", "../x"),
    ("spec: grid given to train", lambda t, m: ["train", "--config", "hidden50:lr=1e-3|3e-4", "--prepared", str(t), "--out", str(t / "r"), "--sweep", "s"],
     "expands to 2 runs", "hidden50:lr=1e-3|3e-4"),
    ("sweep id with ..", lambda t, m: ["sweep", "--configs", "hidden50", "--data", GOOD, "--out", str(t), "--sweep", "../x"],
     "Kubernetes name", "../x"),
    ("S3 URI with no bucket", lambda t, m: prepare("s3:///meli/train.csv", t), "has no bucket", "s3:///meli/train.csv"),
    ("S3 URI that is only a scheme", lambda t, m: prepare(GOOD, "s3://"), "has no bucket", "s3://"),
    ("S3 bucket name invalid", lambda t, m: prepare("s3://My_Bucket/x.csv", t), "not a valid S3 bucket name", "My_Bucket"),
    ("unsupported URI scheme", lambda t, m: prepare("gs://bucket/x.csv", t), "unsupported --data scheme", "gs://bucket/x.csv"),
    ("prepared folder without manifest", lambda t, m: ["train", "--config", "hidden50", "--prepared", str(t), "--out", str(t / "r"), "--sweep", "s"],
     "not a prepared dataset", "no manifest.json"),
    ("aggregate of nothing", lambda t, m: ["aggregate", "--out", str(t), "--sweep", "none"], "no runs found", "none"),
]


@pytest.mark.parametrize("argv, expected, names", [pytest.param(b, e, n, id=i) for i, b, e, n in REFUSED])
def test_refused_with_one_clear_line(argv, expected, names, tmp_path, made, capsys):
    code = main(argv(tmp_path, made))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert expected in errors[0] and names in errors[0], errors[0]
    assert len(errors[0]) < 600  # one readable line, not a dump
    assert not list(tmp_path.rglob("manifest.json"))  # nothing marked complete


@pytest.mark.slow
def test_torn_checkpoint_is_refused_and_never_unpickled(tmp_path, capsys):
    """A checkpoint.pt that is not a weights-only torch file (here, a pickle that would run code) is refused."""
    import pickle

    good = tmp_path / "data"
    assert main(prepare(GOOD, good)) == 0
    prepared = capsys.readouterr().out.strip().splitlines()[-1]
    run = tmp_path / "sweeps" / "s" / "hidden50"
    run.mkdir(parents=True)
    marker = tmp_path / "pwned"
    (run / "checkpoint.pt").write_bytes(pickle.dumps(_Exploit(str(marker)), protocol=2))
    code = main(["train", "--config", "hidden50:epochs=1", "--prepared", prepared, "--out", str(run), "--sweep", "s", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "cannot load checkpoint" in errors[0] and "checkpoint.pt" in errors[0]
    assert not marker.exists() and "Traceback" not in err


class _Exploit:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# (case id, data file, embeddings file, check of report.json)
SKIPPED = [
    ("empty title", "empty_titles.csv", "none", lambda r: r["rows_dropped"]["empty title"] == 3 and r["rows_kept"] == 36),
    ("empty category", "empty_category.csv", "none", lambda r: r["rows_dropped"]["empty category"] == 2 and r["rows_kept"] == 36),
    ("category seen only in test", "category_only_in_test.csv", "none",
     lambda r: r["rows_dropped"]["category not in training split"] == 2 and r["classes"] == 3),
    ("class with one row", "one_row_class.csv", "none",
     # 32 in train: 31 drawn, and one more whose copy was drawn into train (copies share a split)
     lambda r: r["classes_too_small_to_split"] == 1 and r["classes"] == 4 and r["splits"]["train"] == 32),
    ("unknown split value", "unknown_split.csv", "none", lambda r: r["rows_dropped"]["unknown split value"] == 1),
    ("JSON record with no title or category", "missing_fields.jsonl", "none",
     lambda r: r["rows_dropped"] == {"empty title": 1, "empty category": 2} and r["rows_kept"] == 33),
    ("huge title", "MADE/huge_title.csv", "none", lambda r: r["rows_dropped"]["title over 2000 characters"] == 1 and r["rows_kept"] == 36),
    ("vectors: duplicate words", "good.csv", "vectors_duplicates.txt",
     lambda r: r["embedding_file"]["duplicate_words"] == 2 and r["embedding_coverage"] == 1.0),
    ("vectors: a few garbage lines", "good.csv", "vectors_few_garbage.txt",
     lambda r: r["embedding_file"]["bad_lines"] == 2 and r["embedding_coverage"] == 1.0),
]


@pytest.mark.parametrize("data, vectors, check", [pytest.param(d, v, c, id=i) for i, d, v, c in SKIPPED])
def test_skipped_and_counted(data, vectors, check, tmp_path, made, capsys):
    data = str(made / data[len("MADE/"):]) if data.startswith("MADE/") else corpus(data)
    code = main(prepare(data, tmp_path, corpus(vectors) if vectors != "none" else "none"))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    prepared = Path(captured.out.strip().splitlines()[-1])
    report = json.loads((prepared / "report.json").read_text())
    assert check(report), report
    assert report["rows_kept"] + sum(report["rows_dropped"].values()) == report["rows_read"]  # every row accounted for


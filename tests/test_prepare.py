"""prepare: input formats, splits, the vocabulary, class order, the report and the content-hash cache."""

import gzip
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_job
from job.prepare import open_prepared


def write_csv(path: Path, rows, header="title,label_quality,language,category"):
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prepare(data, out, *extra):
    proc = run_job("prepare", "--data", str(data), "--out", str(out), "--embedding-dim", "8", *extra)
    return proc.stdout.strip().splitlines()[-1], proc


def small_rows():
    rows = []
    for i in range(40):
        model = f"mod{chr(97 + i % 26)}{chr(97 + i // 26)}"  # each title distinct: copies would share a split
        rows.append((f"zapatilla running {['azul', 'roja'][i % 2]} {model}", "reliable", "spanish", "SHOES"))
        rows.append((f"remera algodon manga {['corta', 'larga'][i % 2]} {model}", "unreliable", "spanish", "SHIRTS"))
        rows.append((f"taladro percutor {['bosch', 'black'][i % 2]} {model}", "reliable", "spanish", "DRILLS"))
    rows.append(("palabraunica solitaria", "reliable", "spanish", "SHOES"))
    return rows


@pytest.mark.slow
def test_vocabulary_specials_splits_and_class_order(tmp_path):
    data = write_csv(tmp_path / "d.csv", small_rows())
    uri, _ = prepare(data, tmp_path / "out")
    p = open_prepared(uri)
    vocab = json.loads((Path(uri) / "vocab.json").read_text())
    assert vocab[:2] == ["[PAD]", "[UNK]"]
    # filter_extremes(no_below=2): words seen in one title only are out of the vocabulary
    assert "palabraunica" not in vocab and "zapatilla" in vocab
    assert p.label_names == ["SHOES", "SHIRTS", "DRILLS"]  # order of first appearance
    rows = {s: len(p.arrays[f"labels_{s}"]) for s in ("train", "validation", "test")}
    assert rows == {"train": 97, "validation": 12, "test": 12}  # 80/10/10 per class, rounded
    for s in ("validation", "test"):  # stratified: every class in every split
        assert sorted(set(p.arrays[f"labels_{s}"].tolist())) == [0, 1, 2]
    assert isinstance(p.arrays["tokens_train"], np.memmap)  # trainers share the page cache
    assert p.arrays["embeddings"].shape == (len(vocab), 8)
    assert not p.arrays["embeddings"][0].any()  # [PAD] is a zero vector
    offsets, tokens = p.arrays["offsets_train"], p.arrays["tokens_train"]
    assert offsets[0] == 0 and offsets[-1] == len(tokens) and tokens.dtype == np.int32


@pytest.mark.slow
def test_report_counts_drops_and_the_manifest_comes_last(tmp_path):
    rows = small_rows() + [("", "reliable", "spanish", "SHOES"), ("12 34 !!", "reliable", "spanish", "SHOES"),
                           ("algo", "reliable", "spanish", "")]
    uri, _ = prepare(write_csv(tmp_path / "d.csv", rows), tmp_path / "out")
    report = json.loads((Path(uri) / "report.json").read_text())
    assert report["rows_read"] == len(rows)
    assert report["rows_dropped"] == {"empty title": 1, "no tokens after cleaning": 1, "empty category": 1}
    assert report["rows_kept"] == len(rows) - 3
    assert report["vocab_size"] > 2 and 0 <= report["embedding_coverage"] <= 1
    assert set(report["oov_rate"]) == {"train", "validation", "test"}
    manifest = json.loads((Path(uri) / "manifest.json").read_text())
    written = {p.name for p in Path(uri).iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == written


@pytest.mark.slow
def test_same_inputs_find_the_manifest_and_do_nothing(tmp_path):
    data = write_csv(tmp_path / "d.csv", small_rows())
    uri, _ = prepare(data, tmp_path / "out")
    stamp = (Path(uri) / "manifest.json").stat().st_mtime_ns
    uri2, proc = prepare(data, tmp_path / "out")
    assert uri2 == uri and "already prepared" in proc.stderr
    assert (Path(uri) / "manifest.json").stat().st_mtime_ns == stamp
    # another seed is another dataset
    uri3, _ = prepare(data, tmp_path / "out", "--seed", "1")
    assert uri3 != uri


@pytest.mark.slow
def test_input_splits_are_kept_and_unseen_categories_are_counted(tmp_path):
    rows = [r + (s,) for r, s in zip(small_rows(), ["train", "train", "train", "validation", "test"] * 30)]
    rows.append(("producto nuevo raro", "reliable", "spanish", "ONLY_TEST", "test"))
    data = write_csv(tmp_path / "d.csv", rows, header="title,label_quality,language,category,split")
    uri, _ = prepare(data, tmp_path / "out")
    report = json.loads((Path(uri) / "report.json").read_text())
    assert report["splits_from_input"] is True
    assert report["rows_dropped"] == {"category not in training split": 1}
    assert report["splits"]["validation"] == 24 and report["splits"]["test"] == 24


@pytest.mark.slow
def test_course_jsonl_gz(tmp_path):
    path = tmp_path / "spanish.train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, (title, q, lang, cat) in enumerate(small_rows()):
            split = ["train", "train", "train", "validation", "test"][i % 5]
            f.write(json.dumps({"language": lang, "label_quality": q, "title": title, "category": cat, "split": split,
                                "tokenized_title": title.split(), "data": [1, 2], "target": 0, "n_labels": 3, "size": 2}) + "\n")
    uri, _ = prepare(path, tmp_path / "out")
    assert json.loads((Path(uri) / "report.json").read_text())["splits_from_input"] is True


@pytest.mark.parametrize("content, message", [
    ("title;label_quality;language;category\na;b;c;d\n", "missing column(s) title, category"),
    ("", "empty file"),
    ("title,label_quality,language,category\n", "no data rows"),
])
def test_bad_csv_is_one_line(tmp_path, content, message):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    proc = run_job("prepare", "--data", str(data), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").rglob("manifest.json"))


# --- streaming, workers, and the bytes written -------------------------------------------------

from job import tables  # noqa: E402
from job.prepare import NpyWriter, usable_cores  # noqa: E402
from job.prepare_bench import make_titles  # noqa: E402

CORPUS = Path(__file__).parent / "bad_inputs"


def course_preprocessing(csv_path: Path, language: str = "spanish") -> dict[str, bytes]:
    """The files prepare should write for a small CSV with a split column, made the plain way, the whole file at
    once: pandas, the course's tokenizer (job.text, checked on its own in test_text.py), gensim's Dictionary with
    the course's filter_extremes, np.save. Nothing of prepare's streaming, counting or writing is used."""
    import pandas as pd
    from gensim.corpora import Dictionary

    from job import text

    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    stop = text.stopwords(language)
    rows = []  # (tokens, category, split) of the titles kept: known split, some token
    for title, category, split in zip(frame["title"], frame["category"], frame["split"]):
        tokens = text.tokenize(title, stop)
        if tokens and split.strip().lower() in ("train", "validation", "test"):
            rows.append((tokens, category.strip(), split.strip().lower()))
    in_train = {c for _, c, s in rows if s == "train"}
    names = [c for c in dict.fromkeys(c for _, c, _ in rows) if c in in_train]  # by first appearance
    rows = [r for r in rows if r[1] in in_train]
    words = Dictionary(t for t, _, s in rows if s == "train")
    words.filter_extremes(no_below=2, no_above=1.0, keep_n=50000)
    vocab = ["[PAD]", "[UNK]"] + [words[i] for i in range(len(words))]
    index = {w: i for i, w in enumerate(vocab)}

    def npy(values, dtype) -> bytes:
        buf = io.BytesIO()
        np.save(buf, np.asarray(values, dtype=dtype))
        return buf.getvalue()

    files = {}
    for split in ("train", "validation", "test"):
        titles = [[index.get(w, 1) for w in t[:64]] for t, _, s in rows if s == split]  # prepare keeps 64 tokens
        files[f"tokens_{split}.npy"] = npy([i for t in titles for i in t], np.int32)
        files[f"offsets_{split}.npy"] = npy(np.cumsum([0] + [len(t) for t in titles]), np.int64)
        files[f"labels_{split}.npy"] = npy([names.index(c) for _, c, s in rows if s == split], np.int32)
    return {"files": files, "vocab": vocab, "labels": names}


@pytest.mark.slow
def test_the_arrays_are_the_course_preprocessing_done_the_plain_way(tmp_path):
    """prepare's files for a split column with an unknown split, byte for byte, against course_preprocessing."""
    data = CORPUS / "unknown_split.csv"
    uri, _ = prepare(data, tmp_path / "out", "--workers", "2")
    expected = course_preprocessing(data)
    folder = Path(uri)
    for name, blob in expected["files"].items():
        assert (folder / name).read_bytes() == blob, name
    assert json.loads((folder / "vocab.json").read_text()) == expected["vocab"]
    assert json.loads((folder / "labels.json").read_text()) == expected["labels"]
    for name, entry in json.loads((folder / "manifest.json").read_text())["files"].items():  # the manifest's digests
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest(), name


def _folder_bytes(uri: str) -> dict:
    return {p.name: p.read_bytes() for p in Path(uri).iterdir()}


@pytest.mark.slow
def test_any_number_of_workers_writes_the_same_bytes(tmp_path):
    """Three chunks, the last one short: 1 worker (in this process) and 3 workers (a pool) write identical folders."""
    frame = make_titles(2 * tables.CHUNK_ROWS + 1234, categories=40)
    data = tmp_path / "titles.csv"
    frame.to_csv(data, index=False)
    words = sorted({w for t in frame["title"][:500] for w in t.lower().split() if w.isalpha()})
    vectors = write_vectors(tmp_path / "v.txt", words[::2])
    folders = {}
    for workers in (1, 3):
        uri, _ = prepare(data, tmp_path / f"out{workers}", "--embeddings", str(vectors), "--workers", str(workers))
        folders[workers] = _folder_bytes(uri)
        assert [p.name for p in Path(uri).parent.iterdir()] == [Path(uri).name]  # the staging folder is gone
    assert folders[1] == folders[3]
    report = json.loads(folders[1]["report.json"])
    assert report["rows_read"] == len(frame) and report["classes"] == 40 and report["vocab_size"] > 1000


def write_vectors(path: Path, words: list[str], dim: int = 4) -> Path:
    path.write_text("".join(f"{w} " + " ".join(f"{(i * 7 + j) % 11 / 10:.1f}" for j in range(dim)) + "\n"
                            for i, w in enumerate(words)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_json_lines_splits_are_decided_over_the_whole_file(tmp_path):
    """A chunk whose records carry no split field is, as in a whole-file read, a chunk of unknown splits; any workers."""
    frame = make_titles(2 * tables.CHUNK_ROWS + 500, categories=20)
    path = tmp_path / "course.jsonl.gz"
    names = ["train", "train", "train", "Validation", "test", "bogus"]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, (title, cat) in enumerate(zip(frame["title"], frame["category"])):
            record = {"title": title, "category": cat, "tokenized_title": title.split(), "data": [2, 3]}
            if not tables.CHUNK_ROWS <= i < 2 * tables.CHUNK_ROWS:  # the second chunk has no split field at all
                record["split"] = names[i % len(names)]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    folders = {}
    for workers in (1, 2):
        uri, _ = prepare(path, tmp_path / f"out{workers}", "--workers", str(workers))
        folders[workers] = _folder_bytes(uri)
    assert folders[1] == folders[2]
    report = json.loads(folders[1]["report.json"])
    bogus = sum(1 for i in range(len(frame)) if names[i % len(names)] == "bogus"
                and not tables.CHUNK_ROWS <= i < 2 * tables.CHUNK_ROWS)
    assert report["splits_from_input"] is True
    assert report["rows_dropped"]["unknown split value"] == tables.CHUNK_ROWS + bogus


@pytest.mark.parametrize("bad_row, message", [
    (b"a,b,c,d,e\n", "malformed CSV: Error tokenizing data. C error: Expected 4 fields in line {line}, saw 5"),
    (b"caf\xe9 con leche,reliable,spanish,FOOD\n", "not UTF-8 text"),
])
def test_a_bad_row_far_into_the_file_is_one_line(tmp_path, bad_row, message):
    """The row after the first chunk: the same one-line message a whole-file read gave, and nothing left behind."""
    good = b"".join(b"zapatilla running azul,reliable,spanish,SHOES\n" for _ in range(tables.CHUNK_ROWS + 100))
    data = tmp_path / "late.csv"
    data.write_bytes(b"title,label_quality,language,category\n" + good + bad_row + good[:470])
    proc = run_job("prepare", "--data", str(data), "--out", str(tmp_path / "out"), "--workers", "2", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "late.csv" in errors[0], proc.stderr[-2000:]
    assert message.format(line=tables.CHUNK_ROWS + 102) in errors[0]
    assert not list((tmp_path / "out").rglob("*.npy")) and not list((tmp_path / "out").rglob("*staging*"))


@pytest.mark.parametrize("length", [0, 1, 7, 1000])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_npy_writer_writes_what_np_save_writes(tmp_path, length, dtype):
    values = np.arange(length, dtype=dtype) * 3 - 5
    writer = NpyWriter(tmp_path / "a.npy", dtype, length)
    for piece in np.array_split(values, 3):
        writer.write(piece)
    meta = writer.close()
    np.save(tmp_path / "b.npy", values)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert meta["bytes"] == (tmp_path / "b.npy").stat().st_size


def test_workers_default_to_the_usable_cores_and_must_be_positive(tmp_path):
    assert 1 <= usable_cores() <= len(__import__("os").sched_getaffinity(0))
    proc = run_job("prepare", "--data", str(CORPUS / "good.csv"), "--out", str(tmp_path / "out"), "--workers", "0", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --workers 0: must be >= 1"


@pytest.mark.slow
def test_titles_equal_after_cleaning_share_one_split_and_are_counted(tmp_path):
    """No title is both trained on and tested: every copy goes where its first copy was drawn."""
    rows = []
    colors, sizes = ["azul", "roja", "verde", "negra", "blanca"], ["chica", "mediana", "grande", "enorme"]
    for i in range(60):  # 20 titles per category, each written three ways that clean to the same tokens
        cat = ["SHOES", "SHIRTS", "DRILLS"][i % 3]
        j = i // 3  # every word in many titles, so in the vocabulary: distinct titles keep distinct ids
        base = f"{['zapatilla', 'remera', 'taladro'][i % 3]} {colors[j % 5]} {sizes[j // 5]}"
        rows += [(base, "reliable", "spanish", cat), (base.upper() + " 2024!", "reliable", "spanish", cat),
                 (f"<b>{base}</b>", "unreliable", "spanish", cat)]
    uri, _ = prepare(write_csv(tmp_path / "dup.csv", rows), tmp_path / "out")
    p = open_prepared(uri)
    seen = {}
    for split in ("train", "validation", "test"):
        ids, offsets = p.arrays[f"tokens_{split}"], p.arrays[f"offsets_{split}"]
        for s, e in zip(offsets[:-1], offsets[1:]):
            assert seen.setdefault(tuple(ids[s:e]), split) == split  # a title's copies never span two splits
    assert len(seen) == 60
    report = json.loads((Path(uri) / "report.json").read_text())
    assert report["duplicates"]["titles"] == 180 and report["duplicates"]["distinct"] == 60
    assert report["duplicates"]["extra_copies"] == 120 and report["duplicates"]["repeated_titles"] == 60
    assert report["duplicates"]["kept_together"] > 0  # the stratified draw had split some of them


def test_the_step_command_passes_workers_when_given():
    from job import steps

    assert steps.prepare("s3://b/d.csv", "none", "s3://b/o") == [
        "python", "-m", "job", "prepare", "--data", "s3://b/d.csv", "--embeddings", "none", "--out", "s3://b/o"]
    assert steps.prepare("d.csv", "none", "o", result_file="/tmp/p", workers="4")[-4:] == ["--workers", "4", "--result-file", "/tmp/p"]


@pytest.mark.parametrize("read_bytes", [7, 64, 1 << 20])
@pytest.mark.parametrize("rows", [1, 2, 5, 1000])
def test_pieces_cut_between_records_and_parse_as_the_whole_file(tmp_path, monkeypatch, rows, read_bytes):
    """Quoted fields with commas, doubled quotes and line breaks, a '"' inside a field (32" LED), CRLF, a blank
    line, a short row: however small the pieces and the reads, they parse to the whole file's rows."""
    import pandas as pd

    monkeypatch.setattr(tables, "READ_BYTES", read_bytes)
    body = ('title,label_quality,language,category\r\n'
            'tv 32" led,reliable,spanish,TVS\r\n'
            '"remera, manga ""corta""",reliable,spanish,SHIRTS\n'
            '"zapatilla\nrunning\r\nazul",reliable,spanish,"SHOES\n"\n'
            '\n'
            '"a""\n""b",reliable,spanish,X\n'
            'corto,reliable\n'
            '""" taladro """,reliable,spanish,DRILLS\n'
            'mesa "ratona",reliable,spanish,"FURNITURE"\n'
            'x"\n'
            '"","",,\n'
            'ultima,reliable,spanish,LAST')  # no line break at the end
    path = tmp_path / "tricky.csv"
    path.write_bytes(body.encode())
    whole = pd.read_csv(path, dtype=object, keep_default_na=False, na_filter=False, encoding="utf-8")
    pieces = list(tables.pieces(path, path.name, rows=rows))
    frames = [tables.parse(piece)[0] for piece in pieces]
    assert b"".join(piece.read() for piece in pieces) == body.encode().split(b"\n", 1)[1]
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))  # byte ranges that meet
    assert pd.concat(frames, ignore_index=True).equals(whole)
    assert [piece.first_line for piece in pieces][0] == 2


def test_pieces_of_json_lines_parse_as_the_whole_file(tmp_path):
    import pandas as pd

    path = tmp_path / "course.jsonl.gz"
    records = [{"title": f"t{i} \"x\"", "category": f"C{i % 3}", "split": "train"} for i in range(20)]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in records[:7]) + "\n\n" + "\n".join(json.dumps(r) for r in records[7:]) + "\n")
    whole = pd.concat(pd.read_json(path, lines=True, dtype=False, chunksize=3), ignore_index=True)
    plain = tables.staged(path, path.name, tmp_path)  # decompressed once; the pieces are ranges of it
    assert plain.parent == tmp_path and plain.read_bytes() == gzip.decompress(path.read_bytes())
    frames = [tables.parse(piece)[0] for piece in tables.pieces(plain, path.name, rows=3)]
    assert pd.concat(frames, ignore_index=True).equals(whole)


_TOKENIZED = """
import sys
from pathlib import Path
from job import corpus, tables
path, staging = Path(sys.argv[1]), Path(sys.argv[2])
def run(workers, name="rows.csv"):
    folder = staging / str(workers)
    folder.mkdir()
    tasks = ((p, "spanish", folder / f"{i}.npys") for i, p in enumerate(tables.pieces(path, name, rows=50)))
    counts = list(corpus._tokenized(tasks, workers))
    return counts, [(folder / f"{i}.npys").read_bytes() for i in range(len(counts))]
one, two = run(1), run(2)
assert two == one and len(one[0]) > 8, "2 workers: other counts, other piece files, or another order"
assert sum(c.rows for c in one[0]) == 1500
lines = path.read_bytes().split(b"\\n")
path.write_bytes(b"\\n".join(lines[:1010] + [b"a,b,c,d,e"] + lines[1010:]))  # a ragged row in piece 20 of 31
try:
    run(3)
except tables.UserError as e:
    assert "malformed CSV" in str(e), e
    assert all((staging / "3" / f"{i}.npys").exists() for i in range(20)), "the pieces before it were done"
else:
    raise AssertionError("the bad piece's error was not raised")
print("ok")
"""


def test_workers_give_the_counts_and_piece_files_of_one_in_input_order(tmp_path):
    """_tokenized on 1 and 2 workers: the same counts and the same piece files, in input order; a bad piece's
    error comes back in its turn, the pieces before it done."""
    path = tmp_path / "rows.csv"
    make_titles(1500, categories=12).to_csv(path, index=False)
    proc = subprocess.run([sys.executable, "-c", _TOKENIZED, str(path), str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_stratified_split_draws_each_class_80_10_10_in_input_order():
    """A class's rows are taken in input order before its draw, so the split is a function of the rows and the seed."""
    from job import splits

    category = np.random.default_rng(0).integers(0, 5, size=400).astype(np.int32)
    category[category == 3] = 4  # a class with no rows
    category[:2] = 3  # ... and then one with 2: too few to split, kept in train
    split, small = splits.stratified_split(category, ["a", "b", "c", "d", "e"], seed=1)
    assert small == 1 and (split[:2] == 0).all()
    for c in (0, 1, 2, 4):
        n = int((category == c).sum())
        got = np.bincount(split[category == c], minlength=3).tolist()
        assert got == [n - 2 * round(0.1 * n), round(0.1 * n), round(0.1 * n)], (c, got)
    again, _ = splits.stratified_split(category, ["a", "b", "c", "d", "e"], seed=1)
    assert (again == split).all() and not (splits.stratified_split(category, list("abcde"), seed=2)[0] == split).all()

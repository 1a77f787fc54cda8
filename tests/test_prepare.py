"""prepare: input formats, splits, the vocabulary, class order, the report and the content-hash cache."""

import gzip
import json
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
        rows.append((f"zapatilla running {['azul', 'roja'][i % 2]}", "reliable", "spanish", "SHOES"))
        rows.append((f"remera algodon manga {['corta', 'larga'][i % 2]}", "unreliable", "spanish", "SHIRTS"))
        rows.append((f"taladro percutor {['bosch', 'black'][i % 2]}", "reliable", "spanish", "DRILLS"))
    rows.append(("palabraunica solitaria", "reliable", "spanish", "SHOES"))
    return rows


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


def test_input_splits_are_kept_and_unseen_categories_are_counted(tmp_path):
    rows = [r + (s,) for r, s in zip(small_rows(), ["train", "train", "train", "validation", "test"] * 30)]
    rows.append(("producto nuevo raro", "reliable", "spanish", "ONLY_TEST", "test"))
    data = write_csv(tmp_path / "d.csv", rows, header="title,label_quality,language,category,split")
    uri, _ = prepare(data, tmp_path / "out")
    report = json.loads((Path(uri) / "report.json").read_text())
    assert report["splits_from_input"] is True
    assert report["rows_dropped"] == {"category not in training split": 1}
    assert report["splits"]["validation"] == 24 and report["splits"]["test"] == 24


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

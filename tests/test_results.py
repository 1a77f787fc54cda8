"""The sweep's result: chosen on validation, a tfidf baseline row, the best run's per-class view, and
`predict` with a finished run, checked against the true categories.

The sweep trains on the tiny dataset with its splits given (a `split` column, which prepare keeps), so
the titles of its test split are known: predict's `category` column on them gives back the test
balanced accuracy of the report.

    make test PYTEST_ARGS=tests/test_results.py
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, run_job, run_main
from job import configs, scores, steps, train

FAST = "epochs=2,max_train_rows=800"
# The MLP fine-tunes its vectors at a higher rate, so that even 2 epochs on 800 rows classify far above chance
# (about 0.35 balanced accuracy on 8 classes; frozen, it stays at chance) and predict's names can be checked on it.
MLP = f"mlp256:{FAST},freeze_embeddings=false,lr=1e-2"
NGRAMS = f"mlp_ngrams:{FAST},lr=1e-2"  # it tunes its vectors already; at this rate 2 epochs learn the tiny data
CHANCE = 1 / 8  # the tiny dataset's 8 categories


@pytest.fixture(scope="module")
def split_csv(tiny_csv, tmp_path_factory) -> Path:
    """The tiny dataset with a `split` column (8 rows in 10 train, 1 validation, 1 test), which prepare keeps."""
    import pandas as pd

    frame = pd.read_csv(tiny_csv, dtype=str, keep_default_na=False)
    frame["split"] = np.array(["train"] * 8 + ["validation", "test"])[np.arange(len(frame)) % 10]
    path = tmp_path_factory.mktemp("split-data") / "tiny-split.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def sweep(split_csv, tmp_path_factory) -> Path:
    """A small local sweep: three neural runs and the baseline the sweep adds; yields its folder."""
    out = tmp_path_factory.mktemp("results")
    run_job("sweep", "--configs", f"{MLP},hidden50:{FAST},{NGRAMS}", "--data", str(split_csv), "--out", str(out),
            "--sweep", "res", timeout=900)
    return out / "sweeps" / "res"


@pytest.mark.slow
def test_aggregate_writes_the_whole_report_without_torch(sweep, tmp_path):
    """aggregate runs in the CPU image, which has no torch (images/Dockerfile.cpu): the per-class view of the best
    run included, the report must be written without importing it."""
    out = tmp_path / "out"
    shutil.copytree(sweep.parent.parent, out)
    shutil.rmtree(out / "sweeps" / "res" / "report")
    # torch cannot be imported, as in that image (a finder that refuses it: scipy looks torch up in sys.modules)
    code = ("import sys\nclass NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n            raise ImportError('no torch in the CPU image')\n"
            "sys.meta_path.insert(0, NoTorch())\nfrom job.__main__ import main\n"
            f"sys.exit(main(['aggregate', '--out', {str(out)!r}, '--sweep', 'res', '--configs', '']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = out / "sweeps" / "res" / "report"
    assert (report / "per_class.csv").stat().st_size > 0
    assert [f for f in steps.REPORT_FILES if not (report / f).exists()] == []
    assert "The best run on the test split" in (report / "summary.md").read_text()


def rows_of(sweep: Path) -> list[dict]:
    return json.loads((sweep / "report" / "summary.json").read_text())["rows"]


# --- 1. chosen on validation, reported on test ---------------------------------------------


@pytest.mark.slow
def test_runs_are_ranked_and_the_best_chosen_by_validation_balanced_accuracy(sweep):
    rows = [r for r in rows_of(sweep) if r["status"] == "ok"]
    assert [r["config"] for r in rows] == [r["config"] for r in sorted(
        rows, key=lambda r: -r["validation_balanced_accuracy"])]
    assert rows[0]["best"] and not any(r["best"] for r in rows[1:])
    assert all("test_balanced_accuracy" in r for r in rows)  # shown beside, never used to choose
    md = (sweep / "report" / "summary.md").read_text()
    assert "chosen, by validation balanced accuracy" in md and "never used to choose" in md


def test_rank_ignores_the_test_split():
    rows = [{"config": "a", "status": "ok", "validation_balanced_accuracy": 0.9, "test_balanced_accuracy": 0.5},
            {"config": "b", "status": "ok", "validation_balanced_accuracy": 0.8, "test_balanced_accuracy": 0.99}]
    from job.aggregate import rank

    assert [r["config"] for r in rank(rows)] == ["a", "b"] and rows[0]["best"]


def test_best_epoch_is_chosen_by_the_configured_validation_metric():
    assert scores.selection_score("balanced_accuracy", 2.0, 0.7) > scores.selection_score("balanced_accuracy", 1.0, 0.6)
    assert scores.selection_score("loss", 1.0, 0.6) > scores.selection_score("loss", 2.0, 0.7)
    assert scores.selection_score("balanced_accuracy", math.nan, 0.9) == -math.inf  # a diverged epoch is never kept
    assert configs.parse_one("hidden50:select_by=loss").config.select_by == "loss"
    with pytest.raises(Exception, match="select_by='f1'"):
        configs.parse_one("hidden50:select_by=f1")


@pytest.mark.slow
def test_each_run_records_its_best_epoch_by_validation_balanced_accuracy(sweep):
    for row in rows_of(sweep):
        history = [json.loads(line) for line in (sweep / row["config"] / "metrics.jsonl").read_text().splitlines()]
        best = max(history, key=lambda h: (h["validation_balanced_accuracy"], -h["epoch"]))
        assert row["best_epoch"] == best["epoch"], row["config"]
        assert row["selected_by"] == "validation balanced_accuracy"


def test_a_non_finite_validation_loss_on_every_epoch_fails_the_run_with_its_reason(tiny_prepared, tmp_path, monkeypatch):
    real = train.evaluate

    def diverged_validation(model, split, device, predictions=False):
        result = real(model, split, device, predictions)
        return result if predictions else (math.nan, result[1])  # the validation pass only

    monkeypatch.setattr(train, "evaluate", diverged_validation)
    from job.__main__ import main

    out = tmp_path / "run"
    code = main(["train", "--config", "mlp256:epochs=2,max_train_rows=400", "--prepared", tiny_prepared,
                 "--out", str(out), "--sweep", "s", "--device", "cpu"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 3 and summary["status"] == "failed"
    assert summary["reason"].startswith("validation loss was not finite on any epoch (nan, nan)")


# --- 2. the classic baseline ---------------------------------------------------------------


@pytest.mark.slow
def test_every_sweep_adds_the_tfidf_baseline_as_a_row(sweep):
    rows = {r["config"]: r for r in rows_of(sweep)}
    assert rows["tfidf"]["status"] == "ok" and rows["tfidf"]["family"] == "tfidf"
    assert 0.3 < rows["tfidf"]["test_balanced_accuracy"] <= 1.0  # 8 classes: chance is 0.125
    history = (sweep / "tfidf" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == configs.NAMED["tfidf"].epochs == 1  # one line, the fit: the plots draw it like any run
    assert "tfidf" in (sweep / "report" / "summary.csv").read_text()


@pytest.mark.slow
def test_no_baseline_leaves_it_out(tiny_csv, tmp_path):
    run_job("sweep", "--configs", "mlp256:epochs=1,max_train_rows=300", "--data", str(tiny_csv), "--out", str(tmp_path),
            "--sweep", "plain", "--no-baseline", timeout=600)
    assert [r["config"] for r in rows_of(tmp_path / "sweeps" / "plain")] == ["mlp256_epochs=1_max_train_rows=300"]


@pytest.fixture(scope="module")
def synthetic_prepared(tmp_path_factory) -> str:
    """Synthetic titles large enough to compare two fits closely (20,000 rows, 30 categories), prepared."""
    folder = tmp_path_factory.mktemp("recipe")
    run_job("synth", "--rows", "20000", "--categories", "30", "--seed", "3", "--out", str(folder / "titles.csv.gz"))
    proc = run_job("prepare", "--data", str(folder / "titles.csv.gz"), "--embeddings", "none", "--embedding-dim", "16",
                   "--out", str(folder))
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_baseline_is_as_good_as_the_standard_recipe_on_the_same_splits(synthetic_prepared, tmp_path):
    """`tfidf` against the recipe fitted directly with scikit-learn on the prepared splits' words:
    TfidfVectorizer word 1-2-grams + char_wb 2-4-grams, LinearSVC(class_weight="balanced")."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union
    from sklearn.svm import LinearSVC

    from job import baseline
    from job.prepare import open_prepared

    run_job("train", "--config", "tfidf", "--prepared", synthetic_prepared, "--out", str(tmp_path / "tfidf"),
            "--sweep", "recipe")
    ours = json.loads((tmp_path / "tfidf" / "summary.json").read_text())["test_balanced_accuracy"]
    p = open_prepared(synthetic_prepared)
    a = p.arrays
    words = {s: baseline.texts(np.asarray(a[f"tokens_{s}"]), np.asarray(a[f"offsets_{s}"]), p.vocab, 30)
             for s in ("train", "test")}
    recipe = make_union(TfidfVectorizer(ngram_range=(1, 2)), TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)))
    svm = LinearSVC(class_weight="balanced").fit(recipe.fit_transform(words["train"]), a["labels_train"])
    theirs = scores.balanced_accuracy(np.asarray(a["labels_test"]), svm.predict(recipe.transform(words["test"])))
    assert theirs > 0.5  # 30 classes: chance is 0.033; the comparison is between two models that learned
    assert ours >= theirs - 0.005, (ours, theirs)


def test_the_baselines_threaded_classes_are_linearsvcs_own_fit():
    """fit_svm's per-class fits on threads give LinearSVC(class_weight="balanced")'s coefficients."""
    from scipy import sparse
    from sklearn.svm import LinearSVC

    from job import baseline

    x = sparse.random(600, 50, density=0.2, format="csr", random_state=0, dtype=np.float32)
    labels = np.random.default_rng(0).integers(0, 4, 600)
    labels[:150] = x[:150].toarray()[:, :4].argmax(axis=1)  # something to learn
    state, converged = baseline.fit_svm(x, labels, 5, configs.NAMED["tfidf"], threads=2)
    svm = LinearSVC(class_weight="balanced", dual=True, max_iter=baseline.LINEAR_MAX_ITER).fit(x, labels)
    assert converged
    assert np.allclose(state["coef"].numpy()[:4], svm.coef_, atol=1e-4)
    assert np.allclose(state["intercept"].numpy()[:4], svm.intercept_, atol=1e-4)
    assert state["intercept"][4] < -1e3 and not state["coef"][4].any()  # a class absent from training: never predicted


def test_the_baseline_reads_the_prepared_splits(tiny_prepared):
    from job import baseline
    from job.prepare import open_prepared

    p = open_prepared(tiny_prepared)
    a = p.arrays
    words = baseline.texts(np.asarray(a["tokens_test"]), np.asarray(a["offsets_test"]), p.vocab, 30)
    assert len(words) == len(a["labels_test"])
    first = a["tokens_test"][a["offsets_test"][0]:a["offsets_test"][1]]
    assert words[0] == " ".join(p.vocab[i] for i in first if i > 1)


# --- 3. the best run, per class -------------------------------------------------------------


@pytest.mark.slow
def test_best_run_is_copied_for_predict_and_viewed_per_class(sweep):
    rows = rows_of(sweep)
    best = next(r for r in rows if r["best"])
    assert json.loads((sweep / "best" / "summary.json").read_text())["config"] == best["config"]
    assert (sweep / "best" / "model.pt").read_bytes() == (sweep / best["config"] / "model.pt").read_bytes()
    with open(sweep / "report" / "per_class.csv") as f:
        classes = list(csv.DictReader(f))
    assert len(classes) == 8 and set(classes[0]) == {"category", "precision", "recall", "f1", "support"}
    with np.load(sweep / best["config"] / "test_predictions.npz") as z:
        assert sum(int(c["support"]) for c in classes) == len(z["labels"])
        recall = {c["category"]: float(c["recall"]) for c in classes}
        labels, preds = z["labels"], z["predictions"]
    names = torch.load(sweep / "best" / "model.pt", weights_only=True)["label_names"]
    first = labels[0]
    assert recall[names[first]] == pytest.approx(float(np.mean(preds[labels == first] == first)), abs=1e-4)
    md = (sweep / "report" / "summary.md").read_text()
    assert "weakest categories" in md and "most confused pairs" in md
    assert (sweep / "report" / "recall_by_class_size.png").read_bytes()[:4] == b"\x89PNG"


def test_confused_pairs_count_the_errors():
    from job.aggregate import confused_pairs

    labels, preds = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 1, 0, 0, 1, 1])
    assert confused_pairs(labels, preds, ["a", "b", "c"], 10) == [("a", "b", 2), ("b", "a", 1), ("c", "b", 1)]


# --- 4. predict -------------------------------------------------------------------------------


def _titles(tiny_csv: Path, path: Path, n: int = 30, with_id: bool = False) -> Path:
    import pandas as pd

    frame = pd.read_csv(tiny_csv).head(n)[["title"]]
    if with_id:
        frame.insert(0, "id", range(100, 100 + n))
    frame.to_csv(path, index=False)
    return path


def _true_categories(data: Path, n: int) -> list[str]:
    """The categories of the dataset's first n titles, as the data file gives them (what _titles writes)."""
    import pandas as pd

    return pd.read_csv(data, dtype=str, keep_default_na=False).head(n)["category"].tolist()


def _predict(*argv: str) -> list[dict]:
    """`python -m job predict ...` through the CLI's main, in this process; the output CSV's rows."""
    from job.__main__ import main

    out = argv[argv.index("--out") + 1]
    proc = run_main(main, ["predict", "--device", "cpu", *argv])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return list(csv.DictReader(f))


def _agreement(predicted: list[str], truth: list[str]) -> float:
    assert len(predicted) == len(truth)
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


FAR_ABOVE_CHANCE = 3 * CHANCE  # what the best run (the baseline, here) beats on titles of its data by far (0.93)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["best", "tfidf", configs.parse_one(NGRAMS).name])
def test_predict_writes_top_k_categories_with_probabilities(sweep, tiny_csv, tmp_path, run):
    titles = _titles(tiny_csv, tmp_path / "titles.csv", n=200)
    out = tmp_path / "pred.csv"
    rows = _predict("--run", str(sweep / run), "--input", str(titles), "--out", str(out), "--top-k", "3")
    assert len(rows) == 200
    # The names are the true categories' names, not only names from the label set.
    assert _agreement([r["category"] for r in rows], _true_categories(tiny_csv, 200)) > FAR_ABOVE_CHANCE
    assert list(rows[0]) == ["title", "category", "probability", "category_2", "probability_2", "category_3", "probability_3"]
    names = set(torch.load(sweep / run / "model.pt", weights_only=True)["label_names"])
    for r in rows:
        p = [float(r["probability"]), float(r["probability_2"]), float(r["probability_3"])]
        assert p == sorted(p, reverse=True) and sum(p) <= 1.0 + 1e-6
        assert {r["category"], r["category_2"], r["category_3"]} <= names and len({r["category"], r["category_2"]}) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp256", "mlp_ngrams"])
def test_predict_agrees_with_the_training_evaluation(sweep, tiny_csv, name):
    """The same titles through predict and through train's own evaluation give the same classes
    (mlp_ngrams: its n-grams come from the token ids, so predict needs nothing else)."""
    import pandas as pd

    from job import predict
    from job.data import make_split

    neural = next(r["config"] for r in rows_of(sweep) if r["config"].startswith(name + "_"))
    saved = predict.load_run(str(sweep / neural))
    titles = pd.read_csv(tiny_csv).head(200)["title"]
    encoded, _ = predict.encode(titles, saved)
    probs = predict.probabilities(saved, encoded, torch.device("cpu"))
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])])
    split = make_split(np.concatenate(encoded), offsets, np.zeros(len(encoded), dtype=np.int64), saved["max_len"],
                       torch.device("cpu"))
    from job.models import build_model, builder_kwargs

    cfg = configs.TrainConfig(**saved["config"])
    model = build_model(cfg.family, saved["vocab_size"], saved["embed_dim"], saved["classes"],
                        vectors=torch.zeros(saved["vocab_size"], saved["embed_dim"]), **builder_kwargs(cfg))
    model.load_state_dict(saved["model"])
    _, _, preds = train.evaluate(model, split, torch.device("cpu"), predictions=True)
    assert np.mean(preds == probs.argmax(axis=1)) > 0.99  # bf16 on some CPUs may flip a near tie


def test_predict_tokenizes_as_prepare_did(tiny_csv, tiny_prepared):
    """Every training title prepare kept, re-encoded by predict, gives the ids prepare stored."""
    import pandas as pd

    from job import predict, text
    from job.prepare import open_prepared

    p = open_prepared(tiny_prepared)
    saved = {"vocab": p.vocab, "language": p.language, "max_len": 64}
    stored = {tuple(p.arrays["tokens_train"][s:e]) for s, e in zip(p.arrays["offsets_train"][:-1], p.arrays["offsets_train"][1:])}
    titles = [t for t in pd.read_csv(tiny_csv)["title"] if text.tokenize(t, text.stopwords("spanish"))]
    encoded, _ = predict.encode(titles, saved)
    share = np.mean([tuple(e) in stored for e in encoded])
    assert share > 0.75  # the training split's titles (80%) are found exactly as stored


@pytest.mark.slow
def test_predict_submission_format_for_the_challenge_test_file(sweep, tiny_csv, tmp_path):
    titles = _titles(tiny_csv, tmp_path / "test.csv", n=200, with_id=True)
    out = tmp_path / "submission.csv"
    rows = _predict("--run", str(sweep / "best"), "--input", str(titles), "--out", str(out))
    assert list(rows[0]) == ["id", "category"] and [r["id"] for r in rows] == [str(i) for i in range(100, 300)]
    assert _agreement([r["category"] for r in rows], _true_categories(tiny_csv, 200)) > FAR_ABOVE_CHANCE


def _run_folder(sweep: Path, run: str) -> Path:
    """`best`, or the sweep's run whose name starts with `run` (a family's name)."""
    return sweep / (run if run == "best" else next(r["config"] for r in rows_of(sweep) if r["config"].startswith(run)))


@pytest.mark.slow
@pytest.mark.parametrize("run", ["best", "tfidf", "mlp256"])
def test_predict_on_the_test_split_gives_the_reports_balanced_accuracy(sweep, split_csv, tmp_path, run):
    """The run's own test split, titles in and names out through predict, scores what the report says."""
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score

    folder = _run_folder(sweep, run)
    frame = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    test = frame[frame["split"] == "test"]
    titles, out = tmp_path / "test-titles.csv", tmp_path / "pred.csv"
    test[["title"]].to_csv(titles, index=False)  # every test title has known words: no --keep-unknown needed
    rows = _predict("--run", str(folder), "--input", str(titles), "--out", str(out))
    config = json.loads((folder / "summary.json").read_text())["config"]
    reported = next(r for r in rows_of(sweep) if r["config"] == config)["test_balanced_accuracy"]
    measured = balanced_accuracy_score(test["category"].tolist(), [r["category"] for r in rows])
    assert reported > 2 * CHANCE  # a report worth reproducing: a shifted or constant name would not give it
    # train evaluates in bf16 where the CPU has it, predict in fp32: a near tie may flip (one title moves
    # a class's recall by 1/its test rows, about 0.003 here)
    assert measured == pytest.approx(reported, abs=0.01), (measured, reported)


def _error(*args: str) -> str:
    proc = run_job(*args, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.slow
def test_predict_gives_every_row_a_prediction_and_names_the_titles_with_no_known_word(sweep, tiny_csv, tmp_path):
    """A real batch has empty and out-of-vocabulary titles: a submission must still have one row per input row."""
    known = pd.read_csv(tiny_csv)["title"].head(3).tolist()
    batch = tmp_path / "batch.csv"
    pd.DataFrame({"id": [10, 11, 12, 13, 14], "title": [known[0], "", known[1], "xyzzy qwertyuiop", known[2]]}).to_csv(
        batch, index=False)
    out = tmp_path / "submission.csv"
    proc = run_job("predict", "--run", str(sweep / "best"), "--input", str(batch), "--out", str(out))
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["10", "11", "12", "13", "14"] and all(r["category"] for r in rows)
    assert "2 of 5 title(s) empty or with only words outside the run's vocabulary (line 3, 5)" in proc.stderr
    # the same titles as JSON lines: no header, so the lines are the rows' own
    lines = tmp_path / "batch.jsonl"
    lines.write_text("".join(json.dumps({"title": t}) + "\n" for t in ["", known[0], "xyzzy"]))
    proc = run_job("predict", "--run", str(sweep / "best"), "--input", str(lines), "--out", str(out))
    assert "2 of 3 title(s)" in proc.stderr and "(line 1, 3)" in proc.stderr and len(out.read_text().splitlines()) == 4


@pytest.mark.slow
def test_predict_strict_refuses_empty_and_unknown_titles_in_one_line(sweep, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('title\n""\nxyzzy qwertyuiop\n')
    out = tmp_path / "x.csv"
    line = _error("predict", "--run", str(sweep / "best"), "--input", str(bad), "--out", str(out), "--strict")
    assert "2 title(s) empty or with only words outside the run's vocabulary (line 2, 3)" in line and not out.exists()


@pytest.mark.slow
def test_predict_refuses_an_unfinished_run_and_a_vocabulary_mismatch(sweep, tiny_csv, tmp_path):
    titles = _titles(tiny_csv, tmp_path / "t.csv")
    assert "not a finished run (no summary.json)" in _error("predict", "--run", str(tmp_path), "--input", str(titles),
                                                            "--out", str(tmp_path / "x.csv"))
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    source = next(r for r in rows_of(sweep) if r["config"].startswith("mlp256"))["config"]
    (tampered / "summary.json").write_text((sweep / source / "summary.json").read_text())
    saved = torch.load(sweep / source / "model.pt", weights_only=True)
    saved["vocab"] = saved["vocab"][:-5]
    torch.save(saved, tampered / "model.pt")
    assert "vocabulary mismatch" in _error("predict", "--run", str(tampered), "--input", str(titles),
                                           "--out", str(tmp_path / "x.csv"))

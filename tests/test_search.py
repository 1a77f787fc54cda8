"""Search: spaces in the spec language, Optuna's trials, the schedule of rounds and rungs that `next` lists,
train continuing a run to a larger epoch budget bit-exactly, and whole search sweeps on this machine.

The schedule is tested on real run folders: those the tests train, or ones written in the format train
writes (metrics.jsonl and summary.json), so that a promotion's inputs are known exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import forked
from conftest import ROOT, run_job, run_main
from job import configs, fanout, search, steps
from job.errors import UserError

SPACE = "hidden100:lr=loguniform(1e-4,1e-2),dropout=uniform(0.1,0.5),hidden=choice(50,100,200),batch_size=intuniform(256,2048)"


def main(argv):
    from job.__main__ import main as job_main

    return run_main(job_main, argv)


# --- 1. spaces, flags and trials -----------------------------------------------------------------


def test_a_space_of_the_issue_samples_named_valid_trials():
    items = fanout.plan(SPACE, baseline=False, settings=search.Search(trials=6))
    assert len(items) == 6 and len({i["name"] for i in items}) == 6
    for item in items:
        run = configs.parse_one(item["spec"])  # an ordinary run: train takes its spec
        assert run.name == item["name"]
        assert 1e-4 <= run.config.lr <= 1e-2 and 0.1 <= run.config.dropout <= 0.5
        assert run.config.hidden in (50, 100, 200) and 256 <= run.config.batch_size <= 2048
        assert item["name"].startswith("hidden100_lr=") and "_dropout=" in item["name"]  # named from its values
        assert configs.DISPLAY_NAME.match(item["label"])
        assert item["epochs"] == 10


def test_the_same_command_and_seed_give_the_same_trials_and_another_seed_others():
    one = fanout.plan(SPACE, False, search.Search(trials=5, search_seed=7))
    assert fanout.plan(SPACE, False, search.Search(trials=5, search_seed=7)) == one
    assert fanout.plan(SPACE, False, search.Search(trials=5, search_seed=8)) != one
    tpe = fanout.plan(SPACE, False, search.Search(trials=5, search_seed=7, search="tpe"))
    assert len(tpe) == 5


def test_more_trials_keep_the_first_ones():
    few = fanout.plan(SPACE, False, search.Search(trials=4))
    assert fanout.plan(SPACE, False, search.Search(trials=9))[:4] == few


def test_trials_count_per_spec_and_plain_specs_run_as_written():
    items = fanout.plan("hidden50," + SPACE + ",mlp256:lr=loguniform(1e-4,1e-2)", True, search.Search(trials=3))
    names = [i["name"] for i in items]
    assert names[0] == "hidden50" and names[-1] == "tfidf"
    assert sum(n.startswith("hidden100_") for n in names) == 3 and sum(n.startswith("mlp256_") for n in names) == 3


def test_a_small_space_gives_its_distinct_points_and_no_repeats():
    items = fanout.plan("hidden50:hidden=choice(10,20),seed=choice(0,1)", False, search.Search(trials=10))
    assert sorted(i["name"] for i in items) == sorted(f"hidden50_hidden={h}_seed={s}" for h in (10, 20) for s in (0, 1))


def test_intuniform_includes_both_ends():
    items = fanout.plan("hidden50:hidden=intuniform(1,2)", False, search.Search(trials=2))
    assert sorted(i["name"] for i in items) == ["hidden50_hidden=1", "hidden50_hidden=2"]


def test_sampled_floats_keep_three_significant_digits_within_the_range():
    for item in fanout.plan("hidden50:lr=loguniform(1.2345e-4,1.2346e-4)", False, search.Search(trials=3)):
        lr = configs.parse_one(item["spec"]).config.lr
        assert 1.2345e-4 <= lr <= 1.2346e-4


@pytest.mark.parametrize("spec, flags, message", [
    ("hidden50:lr=uniform(0.1,0.01)", ["--trials", "2"], "low must be below high"),
    ("hidden50:lr=uniform(0.1,0.1)", ["--trials", "2"], "low must be below high"),
    ("hidden50:lr=loguniform(-1,1)", ["--trials", "2"], "a log scale needs low > 0"),
    ("hidden50:hidden=intloguniform(0,8)", ["--trials", "2"], "a log scale needs low > 0"),
    ("hidden50:hiden=uniform(1,2)", ["--trials", "2"], "unknown key 'hiden'"),
    ("tfidf:hidden=choice(5,10)", ["--trials", "2"], "hidden does not apply to the tfidf family"),
    ("mlp256:filters=intuniform(10,20)", ["--trials", "2"], "filters does not apply to the mlp family"),
    ("hidden50:select_by=uniform(0,1)", ["--trials", "2"], "select_by is not a number; use choice"),
    ("hidden50:freeze_embeddings=uniform(0,1)", ["--trials", "2"], "freeze_embeddings is not a number"),
    ("hidden50:lr=intuniform(1,3)", ["--trials", "2"], "lr is a float"),
    ("hidden50:lr=normal(0,1)", ["--trials", "2"], "unknown distribution 'normal'"),
    ("hidden50:dropout=uniform(0.1,1.5)", ["--trials", "2"], "dropout=1.5"),
    ("hidden50:lr=uniform(0.1,0.2),hidden=50|100", ["--trials", "2"], "write hidden=choice"),
    ("hidden50:lr=uniform(0.1,0.2)", [], "give --trials N"),
    ("hidden50:lr=uniform(0.1,0.2)", ["--trials", "0"], "--trials 0"),
    ("hidden50:lr=uniform(0.1,0.2)", ["--trials", "-1"], "--trials -1: must be >= 1"),
    ("hidden50", ["--trials", "3"], "no spec holds a search space"),
    ("hidden50:lr=uniform(0.1,0.2)", ["--trials", "2", "--search", "grid"], "--search 'grid'"),
    ("hidden50:lr=uniform(0.1,0.2)", ["--trials", "2", "--halving", "1"], "ETA must be >= 2"),
    ("hidden50:lr=uniform(0.1,0.2)", ["--trials", "2", "--halving", "3", "--min-epochs", "0"], "--min-epochs 0"),
    ("hidden50:lr=uniform(0.1,0.2),epochs=81", ["--trials", "2", "--halving", "2"], "8 rungs to reach 81 epochs; at most 5"),
    ("hidden50:lr=uniform(0.1,0.2)", ["--trials", "2", "--rounds", "9"], "--rounds 9: at most 4"),
    ("tfidf:weight_decay=loguniform(1e-5,1e-3)", ["--trials", "2", "--halving", "3"], "tfidf trains in one go"),
    ("hidden50:epochs=intuniform(3,9)", ["--trials", "2", "--halving", "3"], "halving sets each rung's epochs"),
])
def test_a_bad_space_is_refused_in_one_line_before_any_work(spec, flags, message):
    result = main(["plan", "--configs", spec, *flags])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_grid_spec_with_a_distribution_is_not_taken_as_a_grid():
    with pytest.raises(UserError, match="is a search space; sample it with --trials"):
        configs.expand("hidden50:lr=uniform(0.1,0.2)")


# --- the shape and the flags the DAG passes ---------------------------------------------------------


def test_the_shape_of_a_search():
    assert search.rung_budgets(3, 1, 9) == (1, 3, 9)
    assert search.rung_budgets(3, 1, 10) == (1, 3, 9, 10)
    assert search.rung_budgets(3, 2, 10) == (2, 6, 10)
    assert search.rung_budgets(0, 1, 10) == (10,)
    assert search.rung_budgets(3, 10, 10) == (10,)
    shape = search.shape_of("hidden50:lr=uniform(0.1,0.2),epochs=9", True, search.Search(trials=27, halving=3, rounds=2))
    assert (shape.rounds, shape.budgets, shape.rungs) == (2, (1, 3, 9), 3)
    assert search.shape_of("hidden50,hidden100", True, search.Search()) == search.Shape(1, (10,))


def test_search_args_carry_values_or_argo_expressions_in_one_order():
    assert steps.search_args(None) == [] and steps.search_args({}) == []
    assert steps.search_args(search.Search(trials=27, halving=3)) == [
        "--trials", "27", "--search", "random", "--search-seed", "0", "--halving", "3", "--min-epochs", "1", "--rounds", "1"]
    templated = steps.search_args({k: f"{{{{workflow.parameters.{k}}}}}" for k in reversed(steps.SEARCH_FLAGS)})
    assert templated[:4] == ["--trials", "{{workflow.parameters.trials}}", "--search", "{{workflow.parameters.search}}"]
    with pytest.raises(ValueError, match="unknown search settings"):
        steps.search_args({"trails": "3"})
    # every step's parser takes them
    cmd = steps.next_runs("runs", "s", "hidden50", "true", 2, 1, search.Search(trials=3, rounds=2))
    assert cmd[:3] == ["python", "-m", "job"] and "--round" in cmd and "--trials" in cmd
    assert steps.train("hidden50", "p", "runs", "s", "hidden50", epochs=3)[-2:] == ["--epochs", "3"]


def test_without_search_next_lists_what_plan_lists_and_nothing_after(tmp_path):
    plain = fanout.plan("hidden100:lr=1e-3|3e-4", baseline=True)
    assert [{k: i[k] for k in ("name", "spec", "label")} for i in plain] == [
        {"name": "hidden100_lr=1e-3", "spec": "hidden100:lr=1e-3", "label": "hidden100-lr-1e-3"},
        {"name": "hidden100_lr=3e-4", "spec": "hidden100:lr=3e-4", "label": "hidden100-lr-3e-4"},
        {"name": "tfidf", "spec": "tfidf", "label": "tfidf"}]
    assert [i["epochs"] for i in plain] == [10, 10, configs.NAMED["tfidf"].epochs]
    base = ["next", "--out", str(tmp_path), "--sweep", "s", "--configs", "hidden100:lr=1e-3|3e-4"]
    result = main(base + ["--round", "1", "--rung", "0", "--result-file", str(tmp_path / "list.json")])
    assert result.returncode == 0 and json.loads(result.stdout) == plain == json.loads((tmp_path / "list.json").read_text())
    for round_, rung in ((1, 1), (2, 0), (5, 3)):
        assert json.loads(main(base + ["--round", str(round_), "--rung", str(rung)]).stdout) == []


# --- 2. promotion from run folders -----------------------------------------------------------------


def write_run(out: Path, sweep: str, name: str, scores: list[float], status: str | None = "ok", budget: int | None = None,
              stopped_early: bool = False) -> None:
    """A run folder as train leaves it: metrics.jsonl, and summary.json when the run ended."""
    folder = out / "sweeps" / sweep / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "validation_balanced_accuracy": s, "validation_loss": 1.0 - s}) + "\n"
        for e, s in enumerate(scores, 1)))
    if status:
        (folder / "summary.json").write_text(json.dumps(
            {"status": status, "epochs": len(scores), "budget": budget or len(scores), "stopped_early": stopped_early}))


def next_list(out: Path, configs_text: str, settings: search.Search, round_: int, rung: int, baseline: bool = False):
    return search.next_items(configs_text, baseline, settings, round_, rung, str(out), "s")


def test_halving_promotes_the_best_third_with_ties_to_the_first_name_and_never_a_failed_run(tmp_path):
    grid = "hidden50:seed=0|1|2|3|4|5,epochs=9"
    s = search.Search(halving=3)
    first = next_list(tmp_path, grid, s, 1, 0)
    assert [i["epochs"] for i in first] == [1] * 6
    names = [i["name"] for i in first]
    assert next_list(tmp_path, grid, s, 1, 1) == []  # nobody finished rung 0 yet
    scores = {names[0]: 0.5, names[1]: 0.7, names[2]: 0.7, names[3]: 0.9, names[4]: 0.1, names[5]: 0.2}
    for name, score in scores.items():
        write_run(tmp_path, "s", name, [score], status="failed" if name == names[3] else "ok")
    second = next_list(tmp_path, grid, s, 1, 1)
    assert [(i["name"], i["epochs"]) for i in second] == [(names[1], 3), (names[2], 3)]  # 6 // 3; the 0.9 failed
    write_run(tmp_path, "s", names[1], [0.7, 0.6, 0.65])
    write_run(tmp_path, "s", names[2], [0.7, 0.8, 0.75])
    third = next_list(tmp_path, grid, s, 1, 2)
    assert [(i["name"], i["epochs"]) for i in third] == [(names[2], 9)]  # max(1, 2 // 3)
    # names[2] goes on (train marks its summary running) and ends: every earlier list is still the same
    write_run(tmp_path, "s", names[2], [0.7, 0.8, 0.75, 0.9], status="running")
    assert next_list(tmp_path, grid, s, 1, 1) == second and next_list(tmp_path, grid, s, 1, 2) == third
    write_run(tmp_path, "s", names[2], [0.7, 0.8, 0.75, 0.9, 0.95, 0.9, 0.9, 0.9, 0.9])
    assert next_list(tmp_path, grid, s, 1, 1) == second and next_list(tmp_path, grid, s, 1, 2) == third
    assert next_list(tmp_path, grid, s, 1, 3) == [] and next_list(tmp_path, grid, s, 2, 0) == []


def test_a_run_stopped_early_counts_as_done_at_every_later_rung(tmp_path):
    grid = "hidden50:seed=0|1|2,epochs=9"
    s = search.Search(halving=3)
    names = [i["name"] for i in next_list(tmp_path, grid, s, 1, 0)]
    write_run(tmp_path, "s", names[0], [0.3])
    write_run(tmp_path, "s", names[1], [0.2])
    write_run(tmp_path, "s", names[2], [0.1])
    assert [i["name"] for i in next_list(tmp_path, grid, s, 1, 1)] == [names[0]]
    write_run(tmp_path, "s", names[0], [0.3, 0.35], budget=3, stopped_early=True)
    assert [(i["name"], i["epochs"]) for i in next_list(tmp_path, grid, s, 1, 2)] == [(names[0], 9)]


def test_tfidf_is_trained_once_in_the_first_rung_and_never_halved(tmp_path):
    s = search.Search(halving=3)
    first = next_list(tmp_path, "hidden50:seed=0|1|2,epochs=9", s, 1, 0, baseline=True)
    assert [(i["name"], i["epochs"]) for i in first][-1] == ("tfidf", configs.NAMED["tfidf"].epochs)
    for item in first[:-1]:
        write_run(tmp_path, "s", item["name"], [0.5])
    write_run(tmp_path, "s", "tfidf", [0.99] * 5)
    assert "tfidf" not in [i["name"] for i in next_list(tmp_path, "hidden50:seed=0|1|2,epochs=9", s, 1, 1, baseline=True)]


# --- 2. train continues a run to a larger budget, bit-exactly -----------------------------------------

CONTINUED = "mlp256:epochs=9,max_train_rows=400,batch_size=50"  # 8 batches an epoch; dropout draws from the RNG


def train_to(prepared: str, out: Path, epochs: int | None, config: str = CONTINUED) -> int:
    import forked

    args = ["train", "--config", config, "--prepared", prepared, "--out", str(out), "--sweep", "search", "--device", "cpu"]
    return forked.run(args + ([] if epochs is None else ["--epochs", str(epochs)]), log=out.parent / f"{out.name}.log")


def outcome(out: Path) -> dict:
    """What a run leaves, timings aside: its history, summary numbers, and the digests of its weights."""
    from test_reliability import SUMMARY_KEYS, weights_digest, without_timing

    summary = json.loads((out / "summary.json").read_text())
    return {"history": without_timing((out / "metrics.jsonl").read_text()),
            "summary": {k: summary[k] for k in SUMMARY_KEYS + ("budget", "stopped_early")},
            "best": weights_digest((out / "model.pt").read_bytes()),
            "last": weights_digest((out / "checkpoint.pt").read_bytes())}


@pytest.mark.slow
@pytest.mark.parametrize("config", [CONTINUED, CONTINUED + ",patience=1,lr=0.03"])
def test_training_to_3_then_to_9_ends_bit_exactly_where_training_to_9_ends(tiny_prepared, tmp_path, config):
    import job.train  # noqa: F401  (forked children start with torch imported)

    straight, promoted = tmp_path / "straight", tmp_path / "promoted"
    assert train_to(tiny_prepared, straight, None, config) == 0
    assert train_to(tiny_prepared, promoted, 3, config) == 0
    short = json.loads((promoted / "summary.json").read_text())
    assert (short["status"], short["budget"]) == ("ok", 3) and short["epochs"] <= 3
    assert train_to(tiny_prepared, promoted, 9, config) == 0
    assert outcome(promoted) == outcome(straight)
    if "patience" in config:  # early stopping and the best epoch as in the straight run: it stops past rung 3
        assert outcome(straight)["summary"]["stopped_early"] and outcome(straight)["summary"]["epochs"] > 3
    assert "resumed from" in (tmp_path / "promoted.log").read_text()
    # a run already at its budget is left as it is, and so is one asked for fewer epochs
    before = (promoted / "checkpoint.pt").read_bytes()
    assert train_to(tiny_prepared, promoted, 9, config) == 0 and train_to(tiny_prepared, promoted, 2, config) == 0
    assert (promoted / "checkpoint.pt").read_bytes() == before
    assert outcome(promoted) == outcome(straight)


def test_a_run_that_stopped_early_is_done_for_any_budget(tmp_path):
    from job import runfiles

    run = configs.parse_one("mlp256:epochs=9,patience=1")
    (tmp_path / "summary.json").write_text(json.dumps({
        "status": "ok", "spec": run.spec, "config_values": run.config.to_dict(), "budget": 3, "stopped_early": True}))
    assert runfiles.finished(str(tmp_path), run, 9) is not None
    (tmp_path / "summary.json").write_text(json.dumps({
        "status": "ok", "spec": run.spec, "config_values": {**run.config.to_dict(), "epochs": 20}, "budget": 3}))
    assert runfiles.finished(str(tmp_path), run, 3) is not None and runfiles.finished(str(tmp_path), run, 4) is None
    other = {**run.config.to_dict(), "lr": 0.5}
    (tmp_path / "summary.json").write_text(json.dumps({"status": "ok", "spec": run.spec, "config_values": other, "budget": 9}))
    assert runfiles.finished(str(tmp_path), run, 3) is None


# --- 5, 6. search sweeps on this machine: rounds and rungs, resume and extend ------------------------

# Tiny trials: 8 batches of 50 rows an epoch, 9 epochs at most (rungs of 1, 3 and 9 with ETA 3).
TINY_SPACE = "mlp256:lr=loguniform(1e-3,1e-1),mlp_hidden=choice(16,32),max_train_rows=400,batch_size=50,epochs=9"


def histories(sweep_dir: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sweep_dir.glob("*/metrics.jsonl") if p.parent.name != "best"}


def sweep_cmd(data: Path, out: Path, *flags: str) -> list[str]:
    return ["sweep", "--configs", TINY_SPACE, "--data", str(data), "--out", str(out), "--sweep", "s", "--no-baseline",
            "--parallel", "2", *flags]


@pytest.mark.slow
def test_a_halving_sweep_resumes_and_extends_without_training_a_finished_run_again(tiny_csv, tmp_path):
    flags = ["--trials", "3", "--halving", "3", "--search-seed", "1", "--search", "tpe"]
    run_job(*sweep_cmd(tiny_csv, tmp_path, *flags))
    sweep_dir = tmp_path / "sweeps" / "s"
    report = json.loads((sweep_dir / "report" / "summary.json").read_text())
    rows = {r["config"]: r for r in report["rows"]}
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows.values())
    # 3 trials -> 1 -> 1: one run reaches the last rung, trained to 9; the others stop after rung 0, at 1 epoch
    assert sorted((r["rung"], r["epochs"]) for r in rows.values()) == [(0, 1), (0, 1), (2, 9)]
    search_record = report["search"]
    assert (search_record["halving_eta"], search_record["rung_epochs"], search_record["sampler"]) == (3, [1, 3, 9], "tpe")
    assert (search_record["epochs_spent"], search_record["epochs_full"]) == (11, 27)
    assert set(search_record["spaces"][TINY_SPACE]) == {"lr", "mlp_hidden"}
    assert (sweep_dir / "report" / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert "## The search" in (sweep_dir / "report" / "summary.md").read_text()
    first = histories(sweep_dir)

    # the same command again: every rung lists the same runs, and nothing trains
    proc = run_job(*sweep_cmd(tiny_csv, tmp_path, *flags))
    assert histories(sweep_dir) == first
    assert proc.stderr.count("already finished") == 5  # 3 in rung 0, 1 in rung 1, 1 in rung 2

    # more trials and a second round: only new runs train, an old run only goes on from where it was
    run_job(*sweep_cmd(tiny_csv, tmp_path, "--trials", "5", "--halving", "3", "--search-seed", "1", "--rounds", "2",
                       "--search", "tpe"))
    after = histories(sweep_dir)
    assert len(after) == 10
    for name, text in first.items():
        assert after[name].startswith(text)  # the same epochs, bit for bit, perhaps followed by more
    report = json.loads((sweep_dir / "report" / "summary.json").read_text())
    assert sorted(r["round"] for r in report["rows"]) == [1] * 5 + [2] * 5
    assert sum(r["rung"] == 2 for r in report["rows"]) == 2  # one per round: 5 -> 1 -> 1


@pytest.mark.slow
@pytest.mark.s3
def test_next_reads_the_results_from_s3_and_is_idempotent(tiny_csv, s3_env, tmp_path):
    env, bucket = s3_env
    out = f"s3://{bucket}/runs"
    run_job(*sweep_cmd(tiny_csv, out, "--trials", "3", "--halving", "3"), env={**os.environ, **env})
    lists = []
    for attempt in range(2):  # a `next` run again (as a retried pod would) writes the same list
        proc = run_job("next", "--out", out, "--sweep", "s", "--configs", TINY_SPACE, "--baseline", "false",
                       "--trials", "3", "--halving", "3", "--round", "1", "--rung", "2",
                       "--result-file", str(tmp_path / f"list{attempt}.json"), env={**os.environ, **env})
        lists.append((tmp_path / f"list{attempt}.json").read_text())
        assert json.loads(proc.stdout) == json.loads(lists[-1])
    assert lists[0] == lists[1] and len(json.loads(lists[0])) == 1 and json.loads(lists[0])[0]["epochs"] == 9


def test_the_bench_searches_27_trials_in_rungs_of_3_9_and_27_epochs():
    from job import bench_search as b

    plan = search.parse(b.SPACE, False, search.Search(trials=b.TRIALS, halving=b.ETA, min_epochs=b.MIN_EPOCHS))
    assert search.shape(plan).budgets == (3, 9, 27) and b.TRIALS == 27
    assert len(fanout.plan(b.SPACE, False, search.Search(trials=b.TRIALS, search_seed=b.SEED))) == 27


@pytest.mark.parametrize("config, epochs, message", [
    ("hidden50", "0", "--epochs 0: must be >= 1"),
    ("tfidf", "3", f"tfidf trains in one go to its epochs ({configs.NAMED['tfidf'].epochs})"),
])
def test_a_bad_budget_is_refused_in_one_line_before_any_work(tmp_path, config, epochs, message):
    result = main(["train", "--config", config, "--prepared", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                   "--sweep", "s", "--epochs", epochs, "--device", "cpu"])
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()

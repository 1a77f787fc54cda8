"""Config specs: named configs, overrides, grids, list splitting and the errors a user sees."""

import json
import re

import pytest

from job import configs, fanout
from job.configs import NAMED, TrainConfig, expand, parse_one, split_specs
from job.errors import UserError


@pytest.mark.parametrize("name", sorted(n for n in NAMED if NAMED[n].family != "tfidf"))
def test_every_named_neural_config_is_valid_and_builds(name):
    import torch

    from job.models import build_model, builder_kwargs

    cfg = configs.validate(NAMED[name])
    model = build_model(cfg.family, 50, 8, 5, **builder_kwargs(cfg))
    logits = model(torch.randint(1, 50, (3, 6)), torch.tensor([6, 3, 1]))
    assert logits.shape == (3, 5)


def test_the_seed_configs_are_there():
    assert NAMED["hidden50"].family == "lstm" and NAMED["hidden50"].hidden == 50
    assert NAMED["hidden100"].hidden == 100
    assert {NAMED[n].family for n in NAMED} == {"lstm", "mlp", "cnn", "tfidf"}
    assert sum(NAMED[n].family == "mlp" for n in NAMED) >= 2 and sum(NAMED[n].family == "cnn" for n in NAMED) >= 2
    assert any(not c.freeze_embeddings for c in NAMED.values())  # aimed at the best known result


def test_override():
    run = parse_one("hidden100:lr=3e-4,epochs=5")
    assert run.name == "hidden100_lr=3e-4_epochs=5"
    assert run.config.lr == 3e-4 and run.config.epochs == 5 and run.config.hidden == 100
    assert run.spec == "hidden100:lr=3e-4,epochs=5"


def test_list_items_with_equals_belong_to_the_spec_before():
    assert split_specs("hidden100:lr=3e-4,epochs=5,hidden50") == ["hidden100:lr=3e-4,epochs=5", "hidden50"]
    runs = expand("hidden100:lr=3e-4,epochs=5,hidden50")
    assert [r.name for r in runs] == ["hidden100_lr=3e-4_epochs=5", "hidden50"]


def test_grid_expands_to_every_combination_with_unique_names():
    runs = expand("hidden100:lr=1e-3|3e-4,epochs=2|4,mlp256")
    assert [r.name for r in runs] == [
        "hidden100_lr=1e-3_epochs=2", "hidden100_lr=1e-3_epochs=4",
        "hidden100_lr=3e-4_epochs=2", "hidden100_lr=3e-4_epochs=4", "mlp256"]
    assert [(r.config.lr, r.config.epochs) for r in runs[:4]] == [(1e-3, 2), (1e-3, 4), (3e-4, 2), (3e-4, 4)]
    # each expanded spec is itself a single-run spec that train accepts
    assert [parse_one(r.spec).name for r in runs] == [r.name for r in runs]


def test_types_are_checked():
    assert parse_one("hidden50:freeze_embeddings=false").config.freeze_embeddings is False
    assert parse_one("hidden50:patience=2").config.patience == 2
    assert parse_one("hidden50:batch_size=2e3").config.batch_size == 2000


@pytest.mark.parametrize("spec, message", [
    ("hidden75", "unknown config 'hidden75'; valid names: hidden50, hidden100"),
    ("hidden50:lrr=1e-3", "unknown key 'lrr'; valid keys: family"),
    ("hidden50:lr=fast", "lr='fast' is not a valid float"),
    ("hidden50:epochs=2.5", "epochs='2.5' is not a valid int"),
    ("hidden50:freeze_embeddings=maybe", "is not a valid bool"),
    ("hidden50:family=rnn", "family='rnn'"),
    ("hidden50:dropout=1.5", "dropout=1.5"),
    ("hidden50:epochs=0", "epochs=0 (must be >= 1)"),
    ("mlp256:ngram_buckets=-1", "ngram_buckets=-1 (must be >= 0)"),
    ("tfidf:tfidf_c=0", "tfidf_c=0.0 (must be > 0)"),
    ("hidden50:lr", "'lr' is not key=value"),
    ("hidden50:lr=1e-3,lr=3e-4", "given twice"),
    ("hidden50:family=../x", "is not a plain value"),
    ("../x", "unknown config '../x'"),
    ("epochs=3", "no config name comes before it"),
    ("hidden50,hidden50", "listed twice"),
    ("", "no config named"),
])
def test_errors_name_the_problem(spec, message):
    with pytest.raises(UserError) as e:
        expand(spec)
    assert message in str(e.value)


def test_train_takes_one_run():
    with pytest.raises(UserError, match="expands to 2 runs"):
        parse_one("hidden50:lr=1e-3|3e-4")


def test_plan_cli_prints_the_runs(capsys, tmp_path):
    from job.__main__ import main

    assert main(["plan", "--configs", "hidden100:lr=1e-3|3e-4", "--baseline", "false",
                 "--result-file", str(tmp_path / "runs.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "runs.json").read_text())
    assert printed == [{"name": "hidden100_lr=1e-3", "spec": "hidden100:lr=1e-3", "label": "hidden100-lr-1e-3", "epochs": 10,
                        "round": 1, "rung": 0},
                       {"name": "hidden100_lr=3e-4", "spec": "hidden100:lr=3e-4", "label": "hidden100-lr-3e-4", "epochs": 10,
                        "round": 1, "rung": 0}]


def test_plan_adds_the_baseline_once_unless_told_not_to():
    assert [r["name"] for r in fanout.plan("hidden50")] == ["hidden50", "tfidf"]
    assert [r["name"] for r in fanout.plan("tfidf,hidden50")] == ["tfidf", "hidden50"]
    assert [r["name"] for r in fanout.plan("hidden50", baseline=False)] == ["hidden50"]


def test_display_labels_pass_argos_display_name_rule_and_stay_unique():
    names = ["hidden100_lr=1e-3", "hidden100_lr=1e+3", "cnn100_epochs=5_lr=3e-4", "mlp256_" + "dropout=0.25_" * 12 + "x=1"]
    labels = configs.display_labels(names)
    assert labels[2] == "cnn100-epochs-5-lr-3e-4"
    assert len(set(labels)) == len(labels)
    assert all(configs.DISPLAY_NAME.match(label) for label in labels), labels
    assert all(re.fullmatch(r"hidden100-lr-1e-3-[0-9a-f]{8}", label) for label in labels[:2])  # told apart by a hash


def test_unknown_config_is_one_line_with_no_traceback(capsys):
    from job.__main__ import main

    assert main(["plan", "--configs", "hiden50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: config 'hiden50': unknown config")
    assert "hidden50" in err and "Traceback" not in err

"""What a sweep's report shows of its search (job/aggregate.py calls this).

- each run's round and the last rung it reached, with the epochs that rung asked of it;
- search.png: parallel coordinates of the sampled values against validation balanced accuracy;
- parameter importance, Optuna's default evaluator over a study rebuilt from the results: all of a space's
  trials at the one budget they all reached (the first rung's with halving, the full one without);
- the epochs spent, against training every run to its full budget;
- the settings (space, sampler, seed, ETA, rungs), recorded in summary.json.

Everything is read from the run folders through search.Schedule, the same lists `next` wrote.
"""

from __future__ import annotations

import logging
import math

from job import plots, search
from job.space import Dist

log = logging.getLogger("job.search_report")


def describe(schedule: search.Schedule) -> dict:
    """run name -> {round, rung, budget, values, space}: where each run of the search got to."""
    runs: dict[str, dict] = {}
    for round_ in range(1, schedule.shape.rounds + 1):
        for run, values, space in schedule.population(round_):
            runs[run.name] = {"round": round_, "rung": 0, "budget": schedule.budget(run, 0), "values": values,
                              "space": space, "run": run}
        for rung in range(1, schedule.shape.rungs):
            for run in schedule.rung(round_, rung):
                runs[run.name].update(rung=rung, budget=schedule.budget(run, rung))
    for run in schedule.sweep.once:
        runs[run.name] = {"round": 1, "rung": 0, "budget": run.config.epochs, "values": {}, "space": None, "run": run}
    return runs


def settings_record(schedule: search.Schedule) -> dict:
    """summary.json's record of the search: what was searched, how, and with which budgets."""
    s = schedule.sweep.settings
    return {
        "spaces": {sp.text: {k: d.describe() for k, d in sp.space.items()} for sp in schedule.sweep.spaces},
        "trials_per_space_per_round": s.trials, "sampler": s.search, "seed": s.search_seed, "rounds": s.rounds,
        "halving_eta": s.halving or None, "min_epochs": s.min_epochs if s.halving else None,
        "rung_epochs": list(schedule.shape.budgets),
    }


def epochs_spent(runs: dict, histories: dict[str, list]) -> tuple[int, int]:
    """(epochs trained, epochs that training every run to its full budget would take)."""
    spent = sum(len(histories.get(name, [])) for name in runs)
    full = sum(info["run"].config.epochs for info in runs.values())
    return spent, full


def importance(schedule: search.Schedule, runs: dict) -> dict[str, dict[str, float]]:
    """Per space: each sampled key's importance (summing to 1), over the trials that all reached one budget."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = {}
    for space in schedule.sweep.spaces:
        trials = [info for info in runs.values() if info["space"] is space]
        budget = schedule.budget(trials[0]["run"], 0) if trials and schedule.shape.rungs > 1 else None
        study = optuna.create_study(direction="maximize")
        distributions = {k: d.optuna() for k, d in space.space.items()}
        for info in trials:
            r = schedule.result(info["run"].name)
            at = budget or info["run"].config.epochs
            if r.done_at(at) and math.isfinite(r.score_at(at, info["run"].config.select_by)):
                study.add_trial(optuna.trial.create_trial(
                    params={k: v for k, (_, v) in info["values"].items()}, distributions=distributions,
                    value=r.score_at(at, info["run"].config.select_by), state=TrialState.COMPLETE))
        if len(study.get_trials(states=(TrialState.COMPLETE,))) < 2:
            continue
        try:
            values = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as e:  # e.g. every trial scored the same
            log.warning("%s: no parameter importance (%s)", space.text, e)
            continue
        result[space.text] = {k: round(float(v), 4) for k, v in values.items()}
    return result


def plot_parallel(schedule: search.Schedule | None, runs: dict, rows: dict[str, dict]) -> bytes:
    """search.png: one panel per space; an axis per sampled key (its range, log where sampled so) and one
    for validation balanced accuracy; a line per trial, coloured by it, thick where the trial reached the last rung."""
    plt = plots.pyplot()
    from matplotlib import cm

    spaces = schedule.sweep.spaces if schedule else []
    fig, axes = plt.subplots(max(1, len(spaces)), 1, figsize=(10, 4.5 * max(1, len(spaces))), squeeze=False)
    if not spaces:
        axes[0][0].text(0.5, 0.5, "no search space in this sweep", ha="center", va="center", transform=axes[0][0].transAxes)
        axes[0][0].set_axis_off()
        return plots.png(fig)
    last = schedule.shape.rungs - 1
    for ax, space in zip(axes[:, 0], spaces):
        keys = [k for k in space.keys if k in space.space]
        lines = []
        for name, info in runs.items():
            row = rows.get(name, {})
            if info["space"] is not space or row.get("status") != "ok":
                continue
            point = [_position(space.space[k], info["values"][k][1]) for k in keys]
            lines.append((float(row["validation_balanced_accuracy"]), point, info["rung"] == last, name))
        ax.set_title(f"{space.text}  ({len(lines)} finished trials)", fontsize="small")
        if not lines:
            ax.text(0.5, 0.5, "no finished trial", ha="center", va="center", transform=ax.transAxes)
            continue
        scores = [score for score, *_ in lines]
        low, high = min(scores), max(scores)
        for score, point, top, _ in sorted(lines):
            share = (score - low) / (high - low) if high > low else 1.0
            ax.plot(range(len(keys) + 1), point + [share], color=cm.viridis(share), lw=2.2 if top else 0.8,
                    alpha=0.9 if top else 0.5)
        ax.set_xticks(range(len(keys) + 1))
        ax.set_xticklabels([f"{k}\n{_range_text(space.space[k])}" for k in keys] +
                           [f"validation\nbalanced accuracy\n{low:.3f}..{high:.3f}"], fontsize="small")
        ax.set_yticks([])
        ax.set_xlim(-0.1, len(keys) + 0.1)
        for x in range(len(keys) + 1):
            ax.axvline(x, color="grey", lw=0.5)
    fig.suptitle("Sampled values against validation balanced accuracy (thick: reached the last rung)")
    return plots.png(fig)


def _position(d: Dist, value) -> float:
    """Where a value sits on its axis, 0..1."""
    if d.kind == "choice":
        return d.choices.index(value) / max(1, len(d.choices) - 1)
    if d.kind.endswith("loguniform"):
        return (math.log(value) - math.log(d.low)) / (math.log(d.high) - math.log(d.low))
    return (value - d.low) / (d.high - d.low)


def _range_text(d: Dist) -> str:
    if d.kind == "choice":
        return ",".join(d.texts)
    return f"{d.low:g}..{d.high:g}" + (" (log)" if d.kind.endswith("loguniform") else "")


def markdown(record: dict, spent: int, full: int, importances: dict) -> list[str]:
    """The report's search section."""
    lines = ["## The search", ""]
    for text, space in record["spaces"].items():
        lines.append(f"- space `{text}`: " + ", ".join(f"{k}={d}" for k, d in space.items()))
    if record["spaces"]:
        lines.append(f"- {record['trials_per_space_per_round']} trials per space per round, {record['rounds']} round(s), "
                     f"sampler {record['sampler']}, seed {record['seed']}")
    if record["halving_eta"]:
        lines.append(f"- successive halving: ETA {record['halving_eta']}, rungs of "
                     f"{', '.join(map(str, record['rung_epochs']))} epochs")
    lines.append(f"- epochs spent: {spent} of the {full} that training every run fully would take "
                 f"({100 * spent / max(1, full):.0f}%)")
    lines += ["", "Sampled values against validation balanced accuracy: search.png.", ""]
    for text, values in importances.items():
        lines += [f"Parameter importance in `{text}` (Optuna's default evaluator):", "", "| key | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in values.items()] + [""]
    return lines


def columns(rows: list[dict], runs: dict) -> None:
    """Each row gets the run's round, the last rung it reached, and the epochs that rung asked of it."""
    for row in rows:
        info = runs.get(row["config"])
        if info:
            row.update(round=info["round"], rung=info["rung"], budget=info["budget"])


def expected(runs: dict, sweep: search.Sweep) -> list[str]:
    """The runs the report must list, missing ones too; an added baseline only when it left a folder, as before."""
    return [name for name in runs if name not in sweep.added_names]

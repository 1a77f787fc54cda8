"""Search: Optuna's samplers, successive halving and Bayesian rounds over the spaces of job/space.py.

`--trials N` samples N trials from each spec that holds a space, per round (a sweep of two such specs and
`--trials 27 --rounds 2` trains 108 trials in all); plain specs and grids (`a|b`) run as they are. Sampling is
Optuna's (`RandomSampler`, `TPESampler`), seeded from `--search-seed`, the spec and the round, so the same
command gives the same trials on every machine. A sampled float keeps 3 significant digits; the trial is
then an ordinary run, named from its values as a grid's runs are (`hidden100_lr=0.00123_dropout=0.312`).
A trial whose values repeat an earlier run's is asked again.

Successive halving (`--halving ETA --min-epochs M`): rung k trains a round's runs to r_k = M*ETA^k epochs,
the last rung to the config's `epochs`; after each rung the best 1/ETA of its runs, by validation balanced
accuracy at their best epoch so far, go on, and a promoted run continues from its checkpoint. Ties go to the
name that sorts first; a run that failed or did not finish is not promoted. tfidf runs (the baseline too)
have no checkpoint to continue from: they train once, to their epochs, in round 1's first rung.

Rounds (`--rounds R`): each later round rebuilds an Optuna study in memory from the earlier rounds' run
folders (`optuna.trial.create_trial` and `study.add_trial`; no database) and asks it for its trials. A
run stopped in an early rung joins the study as PRUNED with its per-epoch values, which TPE ranks below
the runs that reached the last rung.

Everything here is a function of the command line and the run folders in the output store: `next` for a
round and rung, killed and run again, gives the same list. Optuna is imported only where trials are
sampled; this module imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass, field

from job import configs, runfiles
from job.errors import UserError
from job.scores import selection_score
from job.space import SearchSpec, is_space, parse_space, rounded

log = logging.getLogger("job.search")

SAMPLERS = ("random", "tpe")
MAX_RUNGS = 5  # rungs a sweep may have: the Argo template carries this many (ETA 3 from 1 epoch: up to 81 epochs)
MAX_ROUNDS = 4  # rounds a sweep may have: the Argo template carries this many
RESAMPLE = 50  # a round asks at most this many times --trials for trials with new values before it stops

# --- the settings: one set of flags for sweep, plan, next and aggregate --------------------------


@dataclass(frozen=True)
class Search:
    """A sweep's search settings. The defaults mean no search: every listed run trained once to its epochs."""

    trials: int = 0  # trials sampled per spec that holds a search space, per round; 0 = no space may be given
    search: str = "random"  # sampler: random | tpe (TPE learns from the earlier rounds)
    search_seed: int = 0  # seeds the sampler, with the spec and the round: same command and seed, same trials
    halving: int = 0  # successive halving's ETA: keep the best 1/ETA after each rung (3 is usual); 0 = none
    min_epochs: int = 1  # halving: the first rung's epoch budget M; rung k trains to M*ETA^k epochs
    rounds: int = 1  # rounds of sampling; a later round asks a study rebuilt from the earlier rounds' results

    def flags(self) -> dict[str, str]:
        """The settings as the command lines carry them (steps.search_args)."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}


FLAGS = tuple(f.name for f in dataclasses.fields(Search))  # --trials, --search, ... (underscores as dashes)
DEFAULTS = Search()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The search flags, the same on every step that takes them."""
    p.add_argument("--trials", type=int, default=DEFAULTS.trials,
                   help="trials sampled per spec that holds a search space, per round (default: 0, no search)")
    p.add_argument("--search", default=DEFAULTS.search, help=f"sampler: {' | '.join(SAMPLERS)} (default: {DEFAULTS.search})")
    p.add_argument("--search-seed", type=int, default=DEFAULTS.search_seed, help="sampler seed (default: 0)")
    p.add_argument("--halving", type=int, default=DEFAULTS.halving,
                   help="successive halving: keep the best 1/ETA after each rung, e.g. 3 (default: 0, none)")
    p.add_argument("--min-epochs", type=int, default=DEFAULTS.min_epochs,
                   help="halving: epochs of the first rung (default: 1)")
    p.add_argument("--rounds", type=int, default=DEFAULTS.rounds,
                   help="rounds of sampling; each later one learns from the earlier ones (default: 1)")


def from_args(args) -> Search:
    return Search(**{name: getattr(args, name) for name in FLAGS})


# --- the sweep's runs: plain ones, search spaces, and the baseline ------------------------------


@dataclass(frozen=True)
class Sweep:
    """A --configs list split into what runs as written and what is searched, checked against the settings."""

    settings: Search
    plain: list  # configs.Run: named configs and grid points, halved with round 1's trials (listed before them)
    spaces: list  # SearchSpec
    once: list  # configs.Run trained once to their epochs in round 1, rung 0: with halving, tfidf (the baseline too)
    added: list = field(default_factory=list)  # configs.Run: the baseline when added and not in `once` (listed last)
    added_names: tuple = ()  # the runs added by --baseline rather than listed (in `once` or `added`)

    def max_epochs(self) -> int:
        """The most epochs of a run that halving trains: the last rung's budget."""
        return max([r.config.epochs for r in self.plain + self.added] + [s.epochs() for s in self.spaces] + [1])


def parse(text: str, baseline: bool, settings: Search) -> Sweep:
    """Check a sweep's specs and search settings, all before any work; one line for the first problem."""
    check_settings(settings)
    specs = configs.split_specs(text)
    spaces = [parse_space(s, settings.halving > 0) for s in specs if is_space(s)]
    listed = configs.expand(",".join(s for s in specs if not is_space(s))) if len(spaces) < len(specs) else []
    added = configs.with_baseline(listed, baseline)[len(listed):]
    if spaces and settings.trials < 1:
        raise UserError(f"--trials {settings.trials}: config {spaces[0].text!r} holds a search space; give --trials N (N >= 1)")
    if not spaces and settings.trials:
        raise UserError(f"--trials {settings.trials}: no spec holds a search space, e.g. hidden100:lr=loguniform(1e-4,1e-2)")
    if not spaces and settings.rounds > 1:
        raise UserError(f"--rounds {settings.rounds}: no spec holds a search space to sample again")
    names = [s.text for s in spaces]
    if len(set(names)) != len(names):
        raise UserError("configs: a search space is listed twice")
    once = [r for r in listed + added if r.config.family == "tfidf"] if settings.halving else []
    sweep = Sweep(settings, [r for r in listed if r not in once], spaces, once, [r for r in added if r not in once],
                  tuple(r.name for r in added))
    shape(sweep)  # refuses a sweep with more rungs or rounds than the template carries
    return sweep


def check_settings(s: Search) -> None:
    if s.trials < 0:
        raise UserError(f"--trials {s.trials}: must be >= 1 (or 0: no search space)")
    if s.search not in SAMPLERS:
        raise UserError(f"--search {s.search!r}: choose {' or '.join(SAMPLERS)}")
    if s.search_seed < 0:
        raise UserError(f"--search-seed {s.search_seed}: must be >= 0")
    if s.halving == 1 or s.halving < 0:
        raise UserError(f"--halving {s.halving}: ETA must be >= 2 (3 is usual), or 0 for no halving")
    if s.min_epochs < 1:
        raise UserError(f"--min-epochs {s.min_epochs}: must be >= 1")
    if s.rounds < 1:
        raise UserError(f"--rounds {s.rounds}: must be >= 1")


# --- the shape of a search: rounds, rungs and each rung's epochs ---------------------------------


@dataclass(frozen=True)
class Shape:
    rounds: int  # rounds of sampling
    budgets: tuple  # epochs of each rung, r_0 < r_1 < ... ; one rung (the runs' own epochs) without halving

    @property
    def rungs(self) -> int:
        return len(self.budgets)


def rung_budgets(halving: int, min_epochs: int, max_epochs: int) -> tuple[int, ...]:
    """r_k = M*ETA^k while below the most epochs, then the most epochs: floor(log_ETA(max/M)) + 1 rungs."""
    if not halving or min_epochs >= max_epochs:
        return (max_epochs,)
    budgets = []
    r = min_epochs
    while r < max_epochs:
        budgets.append(r)
        r *= halving
    return tuple(budgets + [max_epochs])


def shape(sweep: Sweep) -> Shape:
    """The rounds and rungs Argo unrolls to; a sweep that needs more than the template carries is refused."""
    s = sweep.settings
    result = Shape(s.rounds, rung_budgets(s.halving, s.min_epochs, sweep.max_epochs()))
    if result.rungs > MAX_RUNGS:
        raise UserError(f"--halving {s.halving} --min-epochs {s.min_epochs}: {result.rungs} rungs to reach "
                        f"{sweep.max_epochs()} epochs; at most {MAX_RUNGS} (raise --min-epochs or --halving)")
    if result.rounds > MAX_ROUNDS:
        raise UserError(f"--rounds {result.rounds}: at most {MAX_ROUNDS}")
    return result


def shape_of(text: str, baseline: bool, settings: Search) -> Shape:
    """The shape of a sweep's search from its command line alone (no store, no Optuna)."""
    return shape(parse(text, baseline, settings))


# --- results in the output store -----------------------------------------------------------------


@dataclass
class Result:
    """What a run folder says: its per-epoch history and its summary (None when none was written)."""

    history: list
    summary: dict | None

    @property
    def failed(self) -> bool:
        return bool(self.summary) and self.summary.get("status") == "failed"

    @property
    def stopped_early(self) -> bool:
        return bool(self.summary) and self.summary.get("status") == "ok" and bool(self.summary.get("stopped_early"))

    def done_at(self, budget: int) -> bool:
        """Trained to `budget` epochs, or stopped early before (it would stop there again). A run that failed
        on its way to a budget (its failed summary says which) finished only the budgets below it."""
        if self.failed:
            return len(self.history) >= budget and budget < self.summary.get("budget", len(self.history))
        return len(self.history) >= budget or self.stopped_early

    def score_at(self, budget: int, select_by: str) -> float:
        """Validation balanced accuracy of the best epoch up to `budget`, chosen as train chooses it."""
        best, best_score = None, -math.inf
        for h in self.history[:budget]:
            score = selection_score(select_by, h.get("validation_loss", math.inf), h.get("validation_balanced_accuracy"))
            if score > best_score:
                best, best_score = h, score
        return best["validation_balanced_accuracy"] if best else -math.inf


def read_result(out: str, sweep: str, name: str) -> Result:
    folder = runfiles.run_uri(out, sweep, name)
    return Result(runfiles.read_history(folder), runfiles.read_summary(folder))


# --- the schedule: which runs train at each round and rung ---------------------------------------


@dataclass(frozen=True)
class Item:
    """One entry of a list `next` writes: names and specs, never results."""

    run: configs.Run
    epochs: int  # the rung's budget for this run, r_k capped at its config's epochs
    label: str = ""
    round_: int = 1  # the round and rung that train it (train's --round and --rung: its log and MLflow tags)
    rung: int = 0

    def to_json(self) -> dict:
        return {"name": self.run.name, "spec": self.run.spec, "label": self.label, "epochs": self.epochs,
                "round": self.round_, "rung": self.rung}


class Schedule:
    """The runs of each round and rung, worked out from the command line and, past round 1's first rung,
    from the results in the output store (read once each). Nothing here writes."""

    def __init__(self, sweep: Sweep, out: str | None = None, sweep_id: str | None = None):
        self.sweep, self.out, self.sweep_id = sweep, out, sweep_id
        self.shape = shape(sweep)
        self._results: dict[str, Result] = {}
        self._rounds: dict[int, list[tuple[configs.Run, dict, SearchSpec | None]]] = {}
        self._rungs: dict[tuple[int, int], list[configs.Run]] = {}

    # results ---------------------------------------------------------------------------
    def result(self, name: str) -> Result:
        if name not in self._results:
            if self.out is None:
                raise UserError("this round or rung needs the results so far: give --out and --sweep")
            self._results[name] = read_result(self.out, self.sweep_id, name)
        return self._results[name]

    def budget(self, run: configs.Run, rung: int) -> int:
        """Epochs of a run at a rung: r_k capped at its epochs; its own epochs at the last rung."""
        if rung == self.shape.rungs - 1:
            return run.config.epochs
        return min(self.shape.budgets[rung], run.config.epochs)

    # rounds and rungs -----------------------------------------------------------------------
    def population(self, round_: int) -> list[tuple[configs.Run, dict, SearchSpec | None]]:
        """A round's runs at its first rung: (run, sampled values, its space or None), in a fixed order."""
        if round_ not in self._rounds:
            members = [(run, {}, None) for run in self.sweep.plain] if round_ == 1 else []
            taken = {run.name for run, _, _ in members} | {r.name for r in self.sweep.once + self.sweep.added}
            for earlier in range(1, round_):
                taken |= {run.name for run, _, _ in self.population(earlier)}
            for space in self.sweep.spaces:
                history = [(run, values) for earlier in range(1, round_)
                           for run, values, s in self.population(earlier) if s is space]
                for run, values in self._sample(space, round_, history, taken):
                    members.append((run, values, space))
                    taken.add(run.name)
            members += [(run, {}, None) for run in self.sweep.added] if round_ == 1 else []
            self._rounds[round_] = members
        return self._rounds[round_]

    def rung(self, round_: int, rung: int) -> list[configs.Run]:
        """The runs a rung trains (before the baseline): the population, then the best 1/ETA of each rung before."""
        key = (round_, rung)
        if key not in self._rungs:
            if rung == 0:
                self._rungs[key] = [run for run, _, _ in self.population(round_)]
            else:
                before = self.rung(round_, rung - 1)
                self._rungs[key] = self.promoted(before, rung - 1)
        return self._rungs[key]

    def promoted(self, runs: list[configs.Run], rung: int) -> list[configs.Run]:
        """The best max(1, n // ETA) of a rung's runs that finished it, by score; ties to the first name."""
        scored = []
        for run in runs:
            result = self.result(run.name)
            if result.done_at(self.budget(run, rung)):  # a run that failed or did not finish the rung stays
                scored.append((-result.score_at(self.budget(run, rung), run.config.select_by), run.name, run))
        scored.sort(key=lambda t: t[:2])
        keep = max(1, len(runs) // self.sweep.settings.halving)
        return [run for _, _, run in scored[:keep]]

    def items(self, round_: int, rung: int) -> list[Item]:
        """What `next` lists for a round and rung; [] past the last round or rung, or when nobody went on."""
        if round_ < 1 or rung < 0:
            raise UserError(f"--round {round_} --rung {rung}: rounds count from 1, rungs from 0")
        if round_ > self.shape.rounds or rung >= self.shape.rungs:
            return []
        runs = [(run, self.budget(run, rung)) for run in self.rung(round_, rung)]
        if round_ == 1 and rung == 0:
            runs += [(run, run.config.epochs) for run in self.sweep.once]
        # In the Argo UI a run shows once per stage it trains in: with more than one stage, each label starts with
        # its stage, r<round>k<rung>, so that every display name is unique (and stays when a long one is hashed).
        stage = f"r{round_}k{rung}-" if self.shape.rounds * self.shape.rungs > 1 else ""
        names = self._all_names(round_)
        labels = dict(zip(names, configs.display_labels([stage + n for n in names])))
        return [Item(run, epochs, labels[run.name], round_, rung) for run, epochs in runs]

    def _all_names(self, round_: int) -> list[str]:
        names = [run.name for run, _, _ in self.population(round_)]
        return names + [r.name for r in self.sweep.once] if round_ == 1 else names

    # sampling --------------------------------------------------------------------------------
    def _sample(self, space: SearchSpec, round_: int, history: list, taken: set) -> list[tuple[configs.Run, dict]]:
        """--trials new trials of a space for a round, from a study rebuilt from the earlier rounds' runs."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.sweep.settings
        seed = int.from_bytes(hashlib.sha256(f"{s.search_seed}/{space.text}/{round_}".encode()).digest()[:4], "big")
        sampler = optuna.samplers.TPESampler(seed=seed) if s.search == "tpe" else optuna.samplers.RandomSampler(seed=seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        distributions = {k: d.optuna() for k, d in space.space.items()}
        for run, values in history:
            study.add_trial(self._frozen(run, values, distributions))
        trials, asked = [], 0
        while len(trials) < s.trials and asked < RESAMPLE * s.trials:
            asked += 1
            trial = study.ask(distributions)
            values = {k: rounded(space.space[k], trial.params[k]) for k in space.keys if k in space.space}
            run = space.trial(values)
            if run.name not in taken:
                taken = taken | {run.name}
                trials.append((run, values))
        if len(trials) < s.trials:
            log.warning("%s: round %d has %d new trials, not %d: the space has no more distinct points",
                        space.text, round_, len(trials), s.trials)
        return trials

    def _frozen(self, run: configs.Run, values: dict, distributions: dict):
        """An earlier trial as Optuna sees it: COMPLETE at its last rung, PRUNED before, FAIL without an epoch."""
        import optuna
        from optuna.trial import TrialState

        params = {k: v for k, (_, v) in values.items()}
        result = self.result(run.name)
        final = self.budget(run, self.shape.rungs - 1)
        if result.done_at(final) and not result.failed:
            return optuna.trial.create_trial(params=params, distributions=distributions,
                                             value=result.score_at(final, run.config.select_by), state=TrialState.COMPLETE)
        if result.history:
            steps = {h["epoch"]: h["validation_balanced_accuracy"] for h in result.history}
            return optuna.trial.create_trial(params=params, distributions=distributions, intermediate_values=steps,
                                             state=TrialState.PRUNED)
        return optuna.trial.create_trial(params=params, distributions=distributions, state=TrialState.FAIL)


# --- the steps -----------------------------------------------------------------------------------


def next_items(text: str, baseline: bool, settings: Search, round_: int, rung: int,
               out: str | None = None, sweep_id: str | None = None) -> list[dict]:
    """The runs to train at a round and rung, as JSON-ready items {name, spec, label, epochs}."""
    schedule = Schedule(parse(text, baseline, settings), out, sweep_id)
    return [item.to_json() for item in schedule.items(round_, rung)]

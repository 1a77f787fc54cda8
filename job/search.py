"""Search: spaces in the spec language, Optuna's samplers, successive halving and Bayesian rounds.

A spec may give a key a distribution instead of a value; such a spec is a search space:

    hidden100:lr=loguniform(1e-4,1e-2),dropout=uniform(0.1,0.5),hidden=choice(50,100,200),epochs=9

    uniform(a,b)  loguniform(a,b)     a float in [a, b] (log: evenly on a log scale)
    intuniform(a,b)  intloguniform(a,b)  a whole number in [a, b], both ends included
    choice(v1,v2,...)                 one of the values (any key, booleans and names included)

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
import json
import logging
import math
import re
from dataclasses import dataclass, field

from job import configs, storage
from job.errors import UserError

log = logging.getLogger("job.search")

SAMPLERS = ("random", "tpe")
DISTRIBUTIONS = ("uniform", "loguniform", "intuniform", "intloguniform", "choice")
SIGNIFICANT = 3  # significant digits a sampled float keeps: its value in the trial's name and spec
MAX_RUNGS = 5  # rungs a sweep may have: the Argo template carries this many (ETA 3 from 1 epoch: up to 81 epochs)
MAX_ROUNDS = 4  # rounds a sweep may have: the Argo template carries this many
RESAMPLE = 50  # a round asks at most this many times --trials for trials with new values before it stops

# Keys that mean something to some families only; every other key applies to all. A search space on a key
# its family ignores would train every trial alike, so it is refused.
FAMILY_KEYS = {
    "hidden": ("lstm",), "layers": ("lstm",), "bidirectional": ("lstm",),
    "mlp_hidden": ("mlp",),
    "filters": ("cnn",), "fc": ("cnn",),
    "dropout": ("mlp", "cnn", "lstm"), "freeze_embeddings": ("mlp", "cnn", "lstm"), "batch_size": ("mlp", "cnn", "lstm"),
    "lr": ("mlp", "cnn", "lstm"), "patience": ("mlp", "cnn", "lstm"), "max_train_rows": ("mlp", "cnn", "lstm"),
    "word_ngrams": ("tfidf",), "char_ngrams": ("tfidf",), "tfidf_features": ("tfidf",),
}


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


# --- search specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """One key's distribution: a range (low, high) or a list of choices."""

    kind: str  # one of DISTRIBUTIONS
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()  # choice: the parsed values
    texts: tuple = ()  # choice: the values as written, which name the trials

    def optuna(self):
        from optuna import distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind.startswith("int"):
            return d.IntDistribution(int(self.low), int(self.high), log=self.kind == "intloguniform")
        return d.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice({','.join(self.texts)})"
        return f"{self.kind}({_number_text(self.low)},{_number_text(self.high)})"


@dataclass(frozen=True)
class SearchSpec:
    """A spec with at least one distribution: a named config, its fixed values and its space."""

    text: str  # the spec as written (seeds its sampler)
    config: str  # the named config
    keys: tuple  # every key in the order written (names the trials)
    fixed: dict = field(compare=False)  # key -> (text, value)
    space: dict = field(compare=False)  # key -> Dist

    @property
    def family(self) -> str:
        return self.fixed.get("family", (None, configs.NAMED[self.config].family))[1]

    def epochs(self) -> int:
        return self.trial({}).config.epochs if not self.space.get("epochs") else int(self.space["epochs"].high)

    def trial(self, values: dict) -> configs.Run:
        """The run of one trial: sampled values (key -> (text, value)) beside the fixed ones."""
        chosen = {**self.fixed, **values}
        overrides = {k: chosen[k][1] for k in self.keys if k in chosen}
        config = configs.validate(dataclasses.replace(configs.NAMED[self.config], **overrides))
        name = "_".join([self.config] + [f"{k}={chosen[k][0]}" for k in self.keys if k in chosen])
        if not configs.NAME.match(name) or ".." in name:
            raise UserError(f"config {self.text!r}: trial name {name!r} is not a safe folder name (too long?)")
        spec = self.config + ":" + ",".join(f"{k}={chosen[k][0]}" for k in self.keys if k in chosen)
        return configs.Run(name, spec, config)


_CALL = re.compile(r"^([a-z]+)\((.*)\)$")


def is_space(spec: str) -> bool:
    """Whether a spec gives some key a distribution, `key=name(...)`."""
    return any(_CALL.match(value.strip()) for _, value in _assignments(spec))


def _assignments(spec: str) -> list[tuple[str, str]]:
    _, _, rest = spec.partition(":")
    pairs = []
    for item in configs.split_top(rest):
        key, _, value = item.partition("=")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _number_text(x: float) -> str:
    return f"{x:g}"


def parse_space(spec: str, halving: bool) -> SearchSpec:
    """A search spec, checked: a bad space is refused in one line before any work."""
    name = spec.partition(":")[0].strip()
    if name not in configs.NAMED:
        raise UserError(f"config {spec!r}: unknown config {name!r}; valid names: {', '.join(configs.NAMED)}")
    family = configs.NAMED[name].family
    keys, fixed, space = [], {}, {}
    for key, value in _assignments(spec):
        if key not in configs.KEYS:
            raise UserError(f"config {spec!r}: unknown key {key!r}; valid keys: {', '.join(configs.KEYS)}")
        if key in keys:
            raise UserError(f"config {spec!r}: key {key!r} given twice")
        if key == "family":
            raise UserError(f"config {spec!r}: a search space keeps its config's family; search each family in its own spec")
        if family not in FAMILY_KEYS.get(key, configs.FAMILIES):
            raise UserError(f"config {spec!r}: {key} does not apply to the {family} family "
                            f"(only to {', '.join(FAMILY_KEYS[key])}): every trial would train alike")
        keys.append(key)
        call = _CALL.match(value)
        if call:
            space[key] = _parse_dist(spec, key, call.group(1), call.group(2))
        elif "|" in value:
            raise UserError(f"config {spec!r}: {key}={value} is a grid inside a search space; write {key}=choice(...)")
        else:
            fixed[key] = (value, configs.parse_value(key, value, spec))
    if halving and family == "tfidf":
        raise UserError(f"config {spec!r}: tfidf trains in one go, with no checkpoint to continue from; search it without --halving")
    if halving and "epochs" in space:
        raise UserError(f"config {spec!r}: epochs=... in a space with --halving; halving sets each rung's epochs, up to the config's")
    parsed = SearchSpec(spec, name, tuple(keys), fixed, space)
    # every corner of the space must make a valid config (dropout=uniform(0.1,1.5) is refused here, not mid-sweep)
    for corner in ("low", "high"):
        parsed.trial({k: _corner(d, corner) for k, d in space.items()})
    return parsed


def _corner(d: Dist, which: str) -> tuple[str, object]:
    if d.kind == "choice":
        i = 0 if which == "low" else -1
        return d.texts[i], d.choices[i]
    value = d.low if which == "low" else d.high
    value = int(value) if d.kind.startswith("int") else value
    return _number_text(value), value


def _parse_dist(spec: str, key: str, kind: str, inner: str) -> Dist:
    where = f"config {spec!r}: {key}={kind}({inner})"
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{where}: unknown distribution {kind!r}; use {', '.join(DISTRIBUTIONS)}")
    args = [a.strip() for a in inner.split(",")]
    if not all(args):
        raise UserError(f"{where}: an empty argument")
    if kind == "choice":
        if len(set(args)) != len(args):
            raise UserError(f"{where}: a value is listed twice")
        return Dist(kind, choices=tuple(configs.parse_value(key, a, spec) for a in args), texts=tuple(args))
    default = getattr(configs.TrainConfig(), key)
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise UserError(f"{where}: {key} is not a number; use choice(...)")
    if kind.startswith("int") and not isinstance(default, int):
        raise UserError(f"{where}: {key} is a float; use uniform or loguniform")
    if len(args) != 2:
        raise UserError(f"{where}: takes two arguments, low and high")
    try:
        low, high = (float(a) for a in args)
    except ValueError:
        raise UserError(f"{where}: low and high must be numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{where}: low and high must be finite")
    if kind.startswith("int") and (low != int(low) or high != int(high)):
        raise UserError(f"{where}: low and high must be whole numbers")
    if low >= high:
        raise UserError(f"{where}: low must be below high")
    if kind.endswith("loguniform") and low <= 0:
        raise UserError(f"{where}: a log scale needs low > 0")
    return Dist(kind, low, high)


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
            loss = h.get("validation_loss", math.inf)
            score = (h["validation_balanced_accuracy"] if select_by == "balanced_accuracy" else -loss) if math.isfinite(loss) else -math.inf
            if score > best_score:
                best, best_score = h, score
        return best["validation_balanced_accuracy"] if best else -math.inf


def read_result(out: str, sweep: str, name: str) -> Result:
    from job import steps

    folder = steps.run_uri(out, sweep, name)
    history = []
    metrics = storage.join(folder, "metrics.jsonl")
    if storage.exists(metrics):
        for line in storage.read_text(metrics).splitlines():
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line: the epochs before it stand
    summary_uri = storage.join(folder, "summary.json")
    summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else None
    return Result(history, summary)


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
            values = {k: _rounded(space.space[k], trial.params[k]) for k in space.keys if k in space.space}
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


def _rounded(d: Dist, value) -> tuple[str, object]:
    """A sampled value as the trial keeps it, (text, value): floats to SIGNIFICANT digits, within [low, high]."""
    if d.kind == "choice":
        return d.texts[d.choices.index(value)], value
    if d.kind.startswith("int"):
        return str(int(value)), int(value)
    for digits in range(SIGNIFICANT, 18):
        text = f"{value:.{digits}g}"
        if d.low <= float(text) <= d.high:
            return text, float(text)
    return repr(value), value


# --- the steps -----------------------------------------------------------------------------------


def next_items(text: str, baseline: bool, settings: Search, round_: int, rung: int,
               out: str | None = None, sweep_id: str | None = None) -> list[dict]:
    """The runs to train at a round and rung, as JSON-ready items {name, spec, label, epochs}."""
    schedule = Schedule(parse(text, baseline, settings), out, sweep_id)
    return [item.to_json() for item in schedule.items(round_, rung)]


def next_main(args) -> int:
    if args.baseline not in ("true", "false"):
        raise UserError(f"--baseline {args.baseline!r}: expected true or false")
    storage.check_uri(args.out, "--out")
    storage.join(args.out, args.sweep)  # refuses a sweep id that is not a plain name
    items = next_items(args.configs, args.baseline == "true", from_args(args), args.round, args.rung, args.out, args.sweep)
    print(configs.write_lists(items, args.result_file, args.cpu_result_file, args.runs_per_gpu, args.group_result_file))
    return 0

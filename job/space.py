"""Search spaces in the spec language: which keys take a distribution, and the values a trial keeps.

A spec may give a key a distribution instead of a value; such a spec is a search space:

    hidden100:lr=loguniform(1e-4,1e-2),dropout=uniform(0.1,0.5),hidden=choice(50,100,200),epochs=9

    uniform(a,b)  loguniform(a,b)     a float in [a, b] (log: evenly on a log scale)
    intuniform(a,b)  intloguniform(a,b)  a whole number in [a, b], both ends included
    choice(v1,v2,...)                 one of the values (any key, booleans and names included)

How trials are sampled from a space, and named, is job/search.py's (its docstring).

A space is checked whole before anything trains: every corner of it must make a valid config.
job/search.py samples the spaces; this module imports neither torch nor Optuna at import time.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from job import configs
from job.errors import UserError

DISTRIBUTIONS = ("uniform", "loguniform", "intuniform", "intloguniform", "choice")
SIGNIFICANT = 3  # significant digits a sampled float keeps: its value in the trial's name and spec

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


def rounded(d: Dist, value) -> tuple[str, object]:
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

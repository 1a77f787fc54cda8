"""Deterministic synthetic product titles in the MeLi Data Challenge CSV format.

    python -m job synth --rows 60000 --categories 60 --seed 0 --out runs/data/synthetic.csv.gz

Columns: title, label_quality, language, category. The same arguments give the same bytes.

How the data is made, and why it is learnable but not trivially:
- Categories sit in departments of four. Each category has its own words; each department
  has shared words, so siblings look alike and a bag of department words is not enough.
- A title takes 2-4 of its category's words (Zipf-weighted, so a few words carry most rows),
  0-1 department words, a brand or generic word, stopwords, numbers and units, and
  sometimes HTML, capitals and punctuation that preprocessing has to strip.
- One in ten of a title's category words is borrowed from a sibling, so single words mislead.
- Class sizes follow a Zipf law (the rarest classes have a few dozen rows at the defaults).
- 70% of rows are `unreliable` (seller-chosen), and 12% of those carry the label of a sibling.

Chance is 1/categories; what the named configs reach on the default 60,000 rows is measured in
docs/configs.md (the demo's figures).
"""

from __future__ import annotations

import io
import logging

import numpy as np

from job import storage
from job.errors import UserError

log = logging.getLogger("job.synth")

_ONSETS = ["b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "ll", "br", "tr", "pl", "gr", "cr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "á", "é", "í", "ó", "ú", "ia", "ue"]
_CODAS = ["", "", "", "n", "s", "r", "l"]
_STOP = ["de", "para", "con", "el", "la", "en", "y", "sin", "por", "los", "las", "x"]
_GENERIC = ["nuevo", "nueva", "original", "oferta", "envío", "gratis", "premium", "pack", "kit", "set",
            "usado", "importado", "garantía", "calidad", "liquidación", "combo"]
_UNITS = ["ml", "cm", "kg", "mts", "gb", "w", "v", "unidades", "pulgadas", "lts"]
_HTML = ["<b>", "</b>", "<br>", "&amp;", "<p>", "</p>"]

DEPARTMENT_SIZE = 4  # sibling categories share department words
CATEGORY_WORDS = 24  # own words per category
DEPARTMENT_WORDS = 40  # shared words per department
BORROWED_SHARE = 0.10  # share of a category's title words taken from a sibling
UNRELIABLE_SHARE = 0.70  # rows whose label the seller chose
NOISE_SHARE = 0.12  # unreliable rows labelled as a sibling


def _words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        syllables = rng.integers(2, 4)
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if len(word) >= 4 and word not in taken:
            taken.add(word)
            out.append(word)
    return out


def zipf(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def generate(rows: int, categories: int, seed: int = 0):
    """Rows of (title, label_quality, language, category) as a pandas DataFrame."""
    import pandas as pd

    if rows < 1:
        raise UserError(f"--rows {rows}: must be >= 1")
    if categories < 2:
        raise UserError(f"--categories {categories}: must be >= 2")
    rng = np.random.default_rng(seed)
    taken: set[str] = set(_STOP) | set(_GENERIC)
    n_depts = (categories + DEPARTMENT_SIZE - 1) // DEPARTMENT_SIZE
    dept_words = [_words(rng, DEPARTMENT_WORDS, taken) for _ in range(n_depts)]
    cat_words = [_words(rng, CATEGORY_WORDS, taken) for _ in range(categories)]
    brands = [w.capitalize() for w in _words(rng, 60, taken)]
    names = [f"{'_'.join(w.upper() for w in cat_words[c][:2])}" for c in range(categories)]
    dept_of = np.arange(categories) // DEPARTMENT_SIZE

    # Zipf class sizes, shuffled so class id order says nothing about size.
    sizes = zipf(categories, 0.8)[rng.permutation(categories)]
    labels = rng.choice(categories, size=rows, p=sizes)
    word_p = zipf(CATEGORY_WORDS, 1.0)
    dept_p = zipf(DEPARTMENT_WORDS, 0.7)

    titles, quality, shown = [], [], []
    for c in labels:
        d = dept_of[c]
        siblings = [s for s in range(d * DEPARTMENT_SIZE, min((d + 1) * DEPARTMENT_SIZE, categories)) if s != c]
        parts: list[str] = []
        for _ in range(rng.integers(2, 5)):
            source = c
            if siblings and rng.random() < BORROWED_SHARE:
                source = siblings[rng.integers(len(siblings))]
            parts.append(cat_words[source][rng.choice(CATEGORY_WORDS, p=word_p)])
        parts += [dept_words[d][i] for i in rng.choice(DEPARTMENT_WORDS, size=rng.integers(0, 2), p=dept_p)]
        if rng.random() < 0.6:
            parts.append(brands[rng.integers(len(brands))])
        if rng.random() < 0.5:
            parts.append(_GENERIC[rng.integers(len(_GENERIC))])
        order = list(rng.permutation(len(parts)))
        parts = [parts[i] for i in order]
        for _ in range(rng.integers(0, 3)):
            parts.insert(rng.integers(len(parts) + 1), _STOP[rng.integers(len(_STOP))])
        if rng.random() < 0.4:
            parts.append(f"{rng.integers(1, 1000)}{_UNITS[rng.integers(len(_UNITS))]}")
        title = " ".join(parts)
        if rng.random() < 0.05:
            tag = rng.integers(0, 3) * 2
            title = f"{_HTML[tag]}{title}{_HTML[tag + 1]}"
        if rng.random() < 0.2:
            title = title.upper()
        elif rng.random() < 0.3:
            title = title[:1].upper() + title[1:] + rng.choice(["!", "!!", " -", ".", " *"])
        label = c
        reliable = rng.random() >= UNRELIABLE_SHARE
        if not reliable and siblings and rng.random() < NOISE_SHARE:
            label = siblings[rng.integers(len(siblings))]
        titles.append(title)
        quality.append("reliable" if reliable else "unreliable")
        shown.append(names[label])
    return pd.DataFrame({"title": titles, "label_quality": quality, "language": "spanish", "category": shown})


def to_csv_bytes(frame, gz: bool) -> bytes:
    buf = io.BytesIO()
    # mtime=0 keeps the gzip bytes, and so prepare's content hash, the same from run to run.
    compression = {"method": "gzip", "mtime": 0} if gz else None
    frame.to_csv(buf, index=False, compression=compression)
    return buf.getvalue()


def main(args) -> int:
    storage.check_uri(args.out, "--out")
    if not (args.out.endswith(".csv") or args.out.endswith(".csv.gz")):
        raise UserError(f"{args.out}: --out must end in .csv or .csv.gz")
    frame = generate(args.rows, args.categories, args.seed)
    storage.write_bytes(args.out, to_csv_bytes(frame, args.out.endswith(".gz")))
    log.info("wrote %d rows, %d categories to %s", len(frame), frame["category"].nunique(), args.out)
    print(args.out)
    return 0

"""The course's title preprocessing: lowercase, strip HTML, punctuation and digits, tokenize,
drop stopwords and tokens shorter than 3 characters.

The stopword lists ship with the package (job/stopwords/*.txt): nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import html
import re
from importlib import resources

_TAG = re.compile(r"<[^>]{0,200}>")
# \w keeps letters with accents (á, ñ, ç); digits and "_" go with the punctuation.
_WORD = re.compile(r"[^\W\d_]+")
MIN_TOKEN_CHARS = 3  # the course dropped tokens shorter than this


@functools.lru_cache(maxsize=4)
def stopwords(language: str = "spanish") -> frozenset[str]:
    text = resources.files("job").joinpath("stopwords", f"{language}.txt").read_text(encoding="utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def tokenize(title: str, stop: frozenset[str] = frozenset()) -> list[str]:
    """Title -> tokens, as the course did it."""
    text = html.unescape(_TAG.sub(" ", str(title).lower()))
    return [w for w in _WORD.findall(text) if len(w) >= MIN_TOKEN_CHARS and w not in stop]

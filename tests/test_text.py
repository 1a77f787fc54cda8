"""The course's preprocessing: lowercase, HTML, punctuation, digits, stopwords, short tokens."""

import pytest

from job.text import stopwords, tokenize

ES = stopwords("spanish")


@pytest.mark.parametrize("title, tokens", [
    ("Zapatillas Nike Air Max", ["zapatillas", "nike", "air", "max"]),
    ("ZAPATILLAS NIÑO Ñandú Acción", ["zapatillas", "niño", "ñandú", "acción"]),  # accents and ñ survive lowercasing
    ("<b>Remera</b> <br>algodón<p>", ["remera", "algodón"]),  # tags are stripped, not glued
    ("Taladro 500w 220v 13mm", ["taladro"]),  # digits go, and what is left of 500w is too short
    ("Mate de calabaza para el té", ["mate", "calabaza"]),  # stopwords and short words go
    ("Cable usb-c, 2mts!!! (original)", ["cable", "usb", "mts", "original"]),  # punctuation splits words; 2mts keeps its unit
    ("Café &amp; Té", ["café"]),  # entities are decoded, then stripped as punctuation
    ("ab cd efg", ["efg"]),  # under 3 characters goes
    ("", []),
    ("1234 !!! ---", []),
])
def test_tokenize(title, tokens):
    assert tokenize(title, ES) == tokens


def test_stopword_lists_ship_with_the_package():
    assert {"de", "para", "con", "los"} <= ES
    pt = stopwords("portuguese")
    assert {"de", "para", "com", "não"} <= pt
    assert not any(w.startswith("#") for w in ES | pt)

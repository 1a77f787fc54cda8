"""Word-vector files: with and without a header, gzip, word2vec binary, and the errors."""

import gzip

import numpy as np
import pytest

from job import embeddings
from job.errors import UserError

VOCAB = {"[PAD]": 0, "[UNK]": 1, "casa": 2, "perro": 3, "gato": 4}


def write(path, lines, gz=False):
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("header, gz", [(True, False), (False, False), (True, True), (False, True)])
def test_text_vectors_with_and_without_header(tmp_path, header, gz):
    lines = (["4 3"] if header else []) + ["casa 1 2 3", "de 0 0 0", "perro 4 5 6", "auto 1 1 1"]
    name = "vecs.txt.gz" if gz else "vecs.txt"
    vec = embeddings.load(write(tmp_path / name, lines, gz), name, VOCAB, seed=0)
    assert vec.matrix.shape == (5, 3) and vec.matrix.dtype == np.float32
    assert vec.matrix[2].tolist() == [1, 2, 3] and vec.matrix[3].tolist() == [4, 5, 6]
    assert vec.found == 2  # casa and perro; gato gets a random vector
    assert not vec.matrix[0].any() and vec.matrix[4].any()


def test_duplicates_keep_the_first_and_are_counted(tmp_path):
    vec = embeddings.load(write(tmp_path / "v.vec", ["casa 1 1", "casa 2 2", "perro 3 3"]), "v.vec", VOCAB)
    assert vec.matrix[2].tolist() == [1, 1] and vec.stats["duplicate_words"] == 1


def test_word2vec_binary(tmp_path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(["casa", "gato"], np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float32))
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    vec = embeddings.load(tmp_path / "v.bin", "v.bin", VOCAB)
    assert vec.matrix[2].tolist() == [1, 2, 3, 4] and vec.matrix[4].tolist() == [5, 6, 7, 8] and vec.found == 2


@pytest.mark.parametrize("lines, message", [
    (["4 300", "casa 1 2 3"], "embedding dimension mismatch: header says 300, line 2 has 3 values"),
    (["casa 1 2 3"] + [f"w{i} 1 2" for i in range(20)], "lines are malformed"),
    ([], "no word vectors found"),
])
def test_bad_vector_files(tmp_path, lines, message):
    with pytest.raises(UserError, match=message):
        embeddings.load(write(tmp_path / "v.txt", lines), "v.txt", VOCAB)


def test_unknown_format(tmp_path):
    with pytest.raises(UserError, match="unknown word-vector format"):
        embeddings.load(write(tmp_path / "v.csv", ["a 1"]), "v.csv", VOCAB)


@pytest.mark.parametrize("gz", [False, True])
def test_lines_split_across_read_blocks(tmp_path, monkeypatch, gz):
    """Blocks end anywhere, even inside a word or a multi-byte character: the vectors are those of one whole read."""
    lines = ["4 3", "casa 1 2 3\r", "", "perro 4 5 6", "ñandú 7 8 9", "gato 1 1 1"]  # a CRLF line, a blank one, no final newline
    data = "\n".join(lines).encode()
    path = tmp_path / ("v.txt.gz" if gz else "v.txt")
    path.write_bytes(gzip.compress(data) if gz else data)
    vocab = {**VOCAB, "ñandú": 5}
    whole = embeddings.load(path, path.name, vocab)
    for block in (1, 2, 5, 7, 13):
        monkeypatch.setattr(embeddings, "READ_BLOCK", block)
        vec = embeddings.load(path, path.name, vocab)
        assert vec.matrix.tobytes() == whole.matrix.tobytes() and vec.stats == whole.stats
    assert whole.matrix[4].tolist() == [1, 1, 1] and whole.matrix[5].tolist() == [7, 8, 9] and whole.stats["lines"] == 4


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"casa 1 2\nperro 3 4\ngat\xff 5 6\n")
    with pytest.raises(UserError, match=r"v.txt: not UTF-8 text \(line 3, byte 4\)"):
        embeddings.load(path, "v.txt", VOCAB)


def test_words_outside_the_vocabulary_are_counted_not_parsed(tmp_path):
    """An unknown word's values are never parsed (its garbage is not a bad line); a wrong count still is one."""
    lines = ["casa 1 2 3", "zzz x y z", "www 1 2", "perro 4 5 6"]
    vec = embeddings.load(write(tmp_path / "v.txt", lines), "v.txt", VOCAB)
    assert vec.stats == {"lines": 4, "bad_lines": 1, "duplicate_words": 0, "dim": 3} and vec.found == 2


def test_a_binary_file_is_refused_before_it_is_read_whole(tmp_path):
    """No newline for tens of megabytes: the first block that does not decode is refused, not the whole file read."""
    import tracemalloc

    path = tmp_path / "v.txt"
    path.write_bytes(b"x" * 5000 + b"\xff" + b"y" * (6 * embeddings.READ_BLOCK))
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"not UTF-8 text \(line 1, byte 5001\)"):
            embeddings.load(path, "v.txt", VOCAB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * embeddings.READ_BLOCK  # a block, its text and a copy; the file is 6 blocks


def test_more_malformed_lines_than_good_ones_is_refused_however_small_the_file(tmp_path):
    with pytest.raises(UserError, match="2 of 3 lines are malformed"):
        embeddings.load(write(tmp_path / "v.txt", ["casa 1 2 3", "gato 1 x 3", "perro"]), "v.txt", VOCAB)
    one_bad = embeddings.load(write(tmp_path / "w.txt", ["casa 1 2 3", "gato 4 5 6", "perro"]), "w.txt", VOCAB)
    assert one_bad.stats["bad_lines"] == 1 and one_bad.found == 2


def test_vectors_covering_under_a_tenth_of_the_vocabulary_are_refused_unless_allowed(caplog):
    vectors = embeddings.Vectors(np.zeros((22, 3), dtype=np.float32), found=1)
    with pytest.raises(UserError, match=r"vectors for only 1 of 20 vocabulary words \(5.0%, under 10%\).*--allow-low-coverage"):
        embeddings.check_coverage(vectors, 20, "en.vec", allow_low=False)
    with caplog.at_level("INFO", logger="job.embeddings"):
        assert embeddings.check_coverage(vectors, 20, "en.vec", allow_low=True) == 0.05
    assert "coverage 5.0%" in caplog.text  # printed either way
    assert embeddings.check_coverage(embeddings.Vectors(vectors.matrix, found=2), 20, "es.vec", allow_low=False) == 0.1


@pytest.mark.slow
def test_trained_vectors_do_not_depend_on_the_process_hash_seed(tmp_path):
    """gensim seeds each word's vector from hashfxn; Python's own str hash changes with PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    code = ("import sys; from job import embeddings; v = embeddings.train([['casa', 'gato'], ['gato', 'perro']] * 50, "
            "{'[PAD]': 0, '[UNK]': 1, 'casa': 2, 'gato': 3, 'perro': 4}, 8); sys.stdout.buffer.write(v.matrix.tobytes())")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outs[0] == outs[1] and len(outs[0]) == 5 * 8 * 4

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

"""Each model family maps (tokens, lengths) to logits of the right shape, and trains."""

import pytest
import torch

from job.models import BUILDERS, build_model


@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize("width", [1, 7])  # 1 is narrower than the CNN's widest filter
def test_output_shape(family, width):
    torch.manual_seed(0)
    model = build_model(family, 100, 16, 632)
    tokens = torch.randint(1, 100, (5, width))
    lengths = torch.tensor([width, max(1, width - 2), 1, width, 1])
    assert model(tokens, lengths).shape == (5, 632)


def test_pretrained_vectors_frozen_or_tuned():
    vectors = torch.randn(30, 6)
    frozen = build_model("lstm", 30, 6, 4, vectors=vectors, freeze=True)
    tuned = build_model("lstm", 30, 6, 4, vectors=vectors, freeze=False)
    assert torch.equal(frozen.embedding.weight, vectors) and not frozen.embedding.weight.requires_grad
    assert tuned.embedding.weight.requires_grad


def test_bidirectional_lstm_reads_both_ways():
    model = build_model("lstm", 30, 6, 4, hidden=5, bidirectional=True)
    assert model.out.in_features == 10
    assert model(torch.randint(1, 30, (3, 4)), torch.tensor([4, 2, 1])).shape == (3, 4)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_a_few_steps_lower_the_loss(family):
    torch.manual_seed(0)
    model = build_model(family, 20, 8, 3)
    tokens = torch.randint(1, 20, (32, 5))
    labels = tokens[:, 0] % 3  # learnable from the first token
    lengths = torch.full((32,), 5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(tokens, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --- mlp_ngrams: the MLP over words and hashed word n-grams ---------------------------------


def _ngram_mlp(**kwargs):
    torch.manual_seed(0)
    return build_model("mlp", 50, 8, 4, ngrams=2, buckets=1000, **kwargs)


def test_ngram_ids_come_from_the_token_ids_and_skip_padding():
    from job.models import ngram_ids

    tokens = torch.tensor([[5, 7, 9, 0], [7, 5, 0, 0]], dtype=torch.int32)
    ids = ngram_ids(tokens, 2, 1000)
    assert ids.shape == (2, 3)
    assert torch.equal(ids > 0, torch.tensor([[True, True, False], [True, False, False]]))  # a window touching [PAD] is 0
    assert ids[0, 0] != ids[1, 0]  # "5 7" and "7 5" are different bigrams
    assert torch.equal(ngram_ids(tokens[:1, :3], 2, 1000), ids[:1, :2])  # the same words, the same ids
    assert int(ids.max()) <= 1000 and torch.equal(ngram_ids(tokens, 3, 1000)[0, :2] > 0, torch.tensor([True, False]))


def test_mlp_ngrams_sees_word_order_where_the_mlp_does_not():
    from job.configs import NAMED
    from job.models import builder_kwargs

    tokens = torch.tensor([[3, 4, 5], [5, 4, 3]])
    lengths = torch.tensor([3, 3])
    torch.manual_seed(0)
    plain = build_model("mlp", 50, 8, 4, dropout=0.0).eval()
    assert torch.allclose(*plain(tokens, lengths))  # a bag of words: the order is lost
    ngrams = build_model("mlp", 50, 8, 4, **{**builder_kwargs(NAMED["mlp_ngrams"]), "dropout": 0.0}).eval()
    assert type(ngrams).__name__ == "NgramMLPClassifier" and ngrams.ngrams.num_embeddings == 200_001
    first, second = ngrams(tokens, lengths)
    assert not torch.allclose(first, second)


def test_mlp_ngrams_logits_do_not_depend_on_the_padding():
    model = _ngram_mlp(dropout=0.0).eval()
    tokens = torch.tensor([[3, 4, 5, 6, 0], [7, 8, 0, 0, 0], [9, 0, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 1])
    wide = model(tokens, lengths)
    assert torch.allclose(wide, model(tokens[:, :4], lengths), atol=1e-6)
    assert torch.allclose(wide[2:], model(tokens[2:, :1], lengths[2:]), atol=1e-6)  # one word: no bigram at all


def test_mlp_ngrams_trains_its_table_with_sparse_row_updates():
    from job import optim

    model = _ngram_mlp(vectors=torch.randn(50, 8), freeze=False)
    optimizer = optim.build_optimizer(model, 1e-2, 1e-5)
    assert isinstance(optimizer, optim.DenseAndSparseAdam)
    assert [p.shape for p in optimizer.sparse.param_groups[0]["params"]] == [(50, 8), (1001, 8)]  # tuned words, n-grams
    tokens = torch.randint(1, 50, (32, 5))
    labels = (tokens[:, 0] * 7 + tokens[:, 1]) % 4  # learnable from the first bigram
    lengths = torch.full((32,), 5)
    before = model.ngrams.weight.detach().clone()
    losses = []
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tokens, lengths), labels)
        loss.backward()
        assert model.ngrams.weight.grad.is_sparse and model.embedding.weight.grad.is_sparse
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    moved = (model.ngrams.weight != before).any(dim=1)
    assert 0 < int(moved.sum()) <= 32 * 4 and not moved[0]  # only the batch's bigram rows; never [PAD]'s
    state = optimizer.state_dict()
    again = optim.build_optimizer(_ngram_mlp(vectors=torch.randn(50, 8), freeze=False), 1e-2, 1e-5)
    again.load_state_dict(state)  # a resumed run gets both optimizers' state back
    assert again.state_dict()["sparse"]["state"][1]["step"] == 30


def test_row_adam_matches_torchs_sparse_adam():
    from job.optim import RowAdam

    torch.manual_seed(0)
    ours, theirs = (torch.nn.Embedding(20, 3, sparse=True) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    opts = RowAdam(ours.parameters(), lr=0.1), torch.optim.SparseAdam(theirs.parameters(), lr=0.1)
    for step in range(5):
        ids = torch.randint(0, 20, (6, 2))
        for table, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            (table(ids).sum(dim=(1, 2)) * torch.arange(6.0)).sum().backward()
            opt.step()
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-6)

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

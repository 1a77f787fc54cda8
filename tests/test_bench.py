"""The fast training path computes what the plain one does; the bench runs and prints its table.

Benchmarks print figures; nothing here asserts a timing.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from job import bench, train
from job.data import epoch_order, make_split
from job.models import build_model

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _batch(rows=16, width=9, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    lengths[0] = width
    tokens = torch.randint(2, vocab, (rows, width), generator=g)
    tokens[torch.arange(width)[None, :] >= lengths[:, None]] = 0  # right-padded, as make_split stores them
    return tokens, lengths, torch.randint(0, 5, (rows,), generator=g)


def test_unpacked_lstm_gives_the_packed_lstm_logits_and_loss():
    torch.manual_seed(0)
    fast = build_model("lstm", 50, 12, 5, hidden=7)
    seed = bench.SeedRNN(torch.randn(50, 12), 7, 5, dropout=0.3)
    seed.load_state_dict(fast.state_dict())  # same names, so both loops start from the same weights
    fast.eval(), seed.eval()
    tokens, lengths, labels = _batch()
    a, b = fast(tokens, lengths), seed(tokens, lengths)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(F.cross_entropy(a, labels), F.cross_entropy(b, labels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["lstm", "mlp", "cnn"])
@pytest.mark.parametrize("width", [9, 3])  # 3: the whole batch is narrower than the CNN's widest filter
def test_extra_padding_changes_nothing(family, width):
    """A batch cut to its longest title or padded wider gives the same logits (LSTM reads length-1; MLP skips
    padding; the CNN pools only windows that start inside the title)."""
    torch.manual_seed(0)
    model = build_model(family, 50, 12, 5).eval()
    tokens, lengths, _ = _batch(width=width)
    expected = model(tokens, lengths)
    for extra in (1, 6):
        torch.testing.assert_close(model(F.pad(tokens, (0, extra)), lengths), expected, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the mask holds in bf16 too
        torch.testing.assert_close(model(F.pad(tokens, (0, 6)), lengths), model(tokens, lengths), rtol=1e-2, atol=1e-2)


def test_cnn_is_its_three_convolutions_pooled_over_the_windows_that_start_in_the_title():
    """One GEMM over the widest filter's windows gives each width's convolution; windows in the padding are left out."""
    torch.manual_seed(0)
    model = build_model("cnn", 50, 12, 5, filters=7, fc=9).eval()
    tokens, lengths, _ = _batch(width=6)
    lengths[1] = 1  # shorter than every filter: its windows at 0 run into the padding
    tokens[1, 1:] = 0
    x = model.embedding(F.pad(tokens, (0, 3))).transpose(1, 2)  # [PAD]s after the batch, so each start has a window
    starts = torch.arange(tokens.shape[1]).view(1, 1, -1)
    pooled = [torch.relu(conv(x)[:, :, :tokens.shape[1]].masked_fill(starts >= lengths.view(-1, 1, 1), float("-inf")).amax(2))
              for conv in model.convs]
    torch.testing.assert_close(model(tokens, lengths), model.fc(torch.cat(pooled, dim=1)), rtol=1e-5, atol=1e-5)
    bench.SeedCNN(torch.randn(50, 12), 7, (2, 3, 4), 9, 0.3, 5).load_state_dict(model.state_dict())  # the same names


def test_epoch_order_random_batches_cut_into_length_pieces():
    lengths = np.random.default_rng(0).poisson(6, 1000) + 1
    order, batches = epoch_order(lengths, 128, np.random.default_rng(1), pieces=4)
    assert sorted(order.tolist()) == list(range(1000))  # every row once
    assert [b[0][0] for b in batches] == list(range(0, 1000, 128))
    for batch in batches:
        assert len(batch) == 4 and all(e > s for s, e, _ in batch)
        for (s, e, w), nxt in zip(batch, batch[1:] + [None]):
            assert w == lengths[order[s:e]].max()  # a piece is padded to its own longest title
            assert nxt is None or nxt[0] == e
        rows = order[batch[0][0]:batch[-1][1]]
        assert list(lengths[rows]) == sorted(lengths[rows])  # sorted within the batch ...
    first = [lengths[order[b[0][0]:b[-1][1]]].mean() for b in batches]
    assert max(first) - min(first) < 2  # ... but batches are random: no bucketing by length
    order, batches = epoch_order(lengths, 300, None)
    assert all(len(b) == 1 for b in batches) and list(lengths[order]) == sorted(lengths)


def test_same_rng_same_order():
    lengths = np.arange(1, 100) % 7 + 1
    a, b = epoch_order(lengths, 10, np.random.default_rng(3), 2), epoch_order(lengths, 10, np.random.default_rng(3), 2)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


@pytest.mark.parametrize("family", ["lstm", "mlp", "cnn"])
def test_pieces_take_the_step_of_the_whole_batch(family, monkeypatch):
    """train_epoch with a batch cut into pieces gives the weights and loss of the same batch taken whole."""
    monkeypatch.setattr(train, "uses_bf16", lambda device, model=None: False)  # fp32, so the comparison is tight
    rng = np.random.default_rng(0)
    lengths = rng.poisson(4, 64) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(2, 40, offsets[-1]).astype(np.int32)
    split = make_split(ids, offsets, rng.integers(0, 5, 64), 30, torch.device("cpu"))
    results = []
    for pieces in (1, 4):
        torch.manual_seed(0)
        model = build_model(family, 40, 8, 5, dropout=0.0)
        optimizer = train.build_optimizer(model, 1e-2, 0.0, torch.device("cpu"))
        order, batches = epoch_order(split.lengths_host, 32, np.random.default_rng(5), pieces)
        loss, seen = train.train_epoch(model, optimizer, split, order, batches, torch.device("cpu"))
        results.append((loss, seen, model.state_dict()))
    (loss1, seen1, w1), (loss4, seen4, w4) = results
    assert seen1 == seen4 == 64
    assert loss1 == pytest.approx(loss4, rel=1e-5)
    for name in w1:
        torch.testing.assert_close(w1[name], w4[name], rtol=1e-4, atol=1e-5)


def test_cpu_pieces_by_batch_size():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train.batch_pieces(cpu, 128) == 1 and train.batch_pieces(cpu, 1024) == 8 and train.batch_pieces(cpu, 4096) == 8
    assert train.batch_pieces(cuda, 1024) == 1


def test_embedding_dropout_keeps_one_minus_p_and_scales():
    torch.manual_seed(0)
    drop = build_model("lstm", 10, 4, 2, dropout=0.3).dropout.train()
    x = torch.ones(200, 30, 50)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.005)
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    assert torch.equal(drop.eval()(x), x)


def test_bench_data_shape_and_learnable_labels():
    ids, offsets, labels = bench.make_rows(20000, classes=40)
    lengths = np.diff(offsets)
    assert ids.dtype == np.int32 and lengths.min() >= 1 and lengths.max() <= bench.MAX_LENGTH
    assert 6.5 < lengths.mean() < 7.5  # Poisson(6) + 1
    assert ids.min() >= 2 and ids.max() < bench.VOCAB
    assert set(np.unique(labels)) == set(range(40))
    # a title's most common word names its class far above chance: the labels are learnable
    first = ids[offsets[:-1]]
    word_class = {}
    for w, c in zip(first, labels):
        word_class.setdefault(w, []).append(c)
    purity = np.mean([np.bincount(v).max() / len(v) for v in word_class.values() if len(v) >= 5])
    assert purity > 0.3
    again = bench.make_rows(20000, classes=40)
    assert all(np.array_equal(a, b) for a, b in zip((ids, offsets, labels), again))  # deterministic


def test_seed_collate_pads_to_the_batch_and_the_widest_filter():
    items = [{"data": [5, 6], "target": 1}, {"data": [7], "target": 0}]
    batch = bench.seed_collate(items)
    assert batch["data"].tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    assert batch["lengths"].tolist() == [2, 1] and batch["target"].tolist() == [1, 0]


@pytest.mark.slow
def test_bench_smoke_prints_the_table_without_gensim_boto3_hera_or_prometheus_client():
    code = ("import sys; from job.__main__ import main; rc = main(sys.argv[1:]); "
            "bad = [m for m in ('gensim', 'boto3', 'hera', 'prometheus_client') if m in sys.modules]; "
            "print('heavy imports:', bad); sys.exit(rc or bool(bad))")
    run = subprocess.run([sys.executable, "-c", code, "bench", "--rows", "2000", "--epochs", "1", "--device", "cpu",
                          "--family", "all", "--classes", "20"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "2,000 training and 500 validation rows" in out and "20 classes" in out
    for family, config in (("lstm", "hidden100"), ("cnn", "cnn100"), ("mlp", "mlp256")):
        assert f"{family} ({config})" in out
    header = [line for line in out.splitlines() if line.startswith("path ")]
    assert len(header) == 3
    for column in ("samples/s", "train time", "speed-up", "10 ep x 6.1M", "peak mem", "val bal acc", "vs seed"):
        assert column in header[0]
    rows = [line.split("  ")[0] for line in out.splitlines()]
    assert rows.count("seed-style") == 3 and rows.count("ours") == 3 and rows.count("ours, batch x4") == 3
    verdicts = [line for line in out.splitlines() if line.startswith("ours") and "overall" in line]
    assert len(verdicts) == 6 and all(("PASS" in v or "FAIL" in v) and "target >= 2x on cpu" in v for v in verdicts)
    assert "heavy imports: []" in out

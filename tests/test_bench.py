"""The fast training path computes what the plain one does; the bench runs its loops interleaved and
prints medians, spreads and verdicts.

Benchmarks print figures; nothing here asserts a timing.
"""

import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import ROOT
from job import bench, bench_seed, optim, train
from job import graphs as graphs_module
from job.data import epoch_order, make_split
from job.device import cpu_has_bf16
from job.errors import UserError
from job.models import build_model


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
    seed = bench_seed.SeedRNN(torch.randn(50, 12), 7, 5, dropout=0.3)
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
    if family == "lstm" and not cpu_has_bf16():
        return  # oneDNN has no bf16 LSTM on a CPU without native bf16, and train runs such a CPU in fp32
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
    bench_seed.SeedCNN(torch.randn(50, 12), 7, (2, 3, 4), 9, 0.3, 5).load_state_dict(model.state_dict())  # the same names


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
    monkeypatch.setattr("job.device.uses_bf16", lambda device, model=None: False)  # fp32, so the comparison is tight
    rng = np.random.default_rng(0)
    lengths = rng.poisson(4, 64) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(2, 40, offsets[-1]).astype(np.int32)
    split = make_split(ids, offsets, rng.integers(0, 5, 64), 30, torch.device("cpu"))
    results = []
    for pieces in (1, 4):
        torch.manual_seed(0)
        model = build_model(family, 40, 8, 5, dropout=0.0)
        optimizer = optim.build_optimizer(model, 1e-2, 0.0)
        order, batches = epoch_order(split.lengths_host, 32, np.random.default_rng(5), pieces)
        loss, seen = train.train_epoch(model, optimizer, split, order, batches, torch.device("cpu"))
        results.append((loss, seen, model.state_dict()))
    (loss1, seen1, w1), (loss4, seen4, w4) = results
    assert seen1 == seen4 == 64
    assert loss1 == pytest.approx(loss4, rel=1e-5)
    for name in w1:
        torch.testing.assert_close(w1[name], w4[name], rtol=1e-4, atol=1e-5)


def _tiny_split(device, rows=96, seed=0, widest=None):
    """A small split; with `widest`, half the titles have that many tokens, so every batch is that wide."""
    rng = np.random.default_rng(seed)
    lengths = rng.poisson(4, rows) + 1
    if widest is not None:
        lengths = np.where(rng.random(rows) < 0.5, widest, np.minimum(lengths, widest))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(2, 40, offsets[-1]).astype(np.int32)
    return make_split(ids, offsets, rng.integers(0, 5, rows), 30, device)


def _epochs(split, device, epochs, steps_for, batch=32, family="lstm"):
    """Train a small model for some epochs; steps_for(model, optimizer, last) gives each epoch's StepRunner. (losses, weights, steps)"""
    torch.manual_seed(0)
    model = build_model(family, 40, 8, 5, dropout=0.0).to(device)
    optimizer = optim.build_optimizer(model, 1e-2, 0.0)
    losses, steps = [], None
    for epoch in range(1, epochs + 1):
        steps = steps_for(model, optimizer, steps)
        order, batches = epoch_order(split.lengths_host, batch, np.random.default_rng([0, epoch]), train.batch_pieces(device, batch))
        losses.append(train.train_epoch(model, optimizer, split, order, batches, device, steps=steps)[0])
    return losses, model.state_dict(), steps


def test_steps_kept_across_epochs_count_each_epochs_loss_alone():
    """The StepRunner a run keeps between epochs (its CUDA graphs) sum each epoch's loss from zero."""
    cpu, split = torch.device("cpu"), _tiny_split(torch.device("cpu"))
    kept = _epochs(split, cpu, 3, lambda model, optimizer, steps: steps or train.StepRunner(model, optimizer, split, cpu))
    fresh = _epochs(split, cpu, 3, lambda model, optimizer, steps: None)
    assert kept[0] == pytest.approx(fresh[0], rel=1e-6) and kept[0][2] < kept[0][0]
    for name in kept[1]:
        torch.testing.assert_close(kept[1][name], fresh[1][name])


def test_cuda_graphs_seam_takes_eager_steps_off_cuda():
    """make_steps, the one seam: eager StepRunner on a CPU whatever the setting; the same loop with graphs or without."""
    cpu, split = torch.device("cpu"), _tiny_split(torch.device("cpu"))
    for graphs in (True, False):
        steps = _epochs(split, cpu, 1, lambda model, optimizer, steps: steps or train.make_steps(model, optimizer, split, cpu, graphs))[2]
        assert type(steps) is train.StepRunner and not steps.graphs_on


def test_train_refuses_a_bad_cuda_graphs_setting_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "job", "train", "--config", "hidden50", "--prepared", str(tmp_path / "p"),
                          "--out", str(tmp_path / "out"), "--sweep", "t", "--device", "cpu", "--cuda-graphs", "yes please"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "--cuda-graphs 'yes please': expected true or false" in errors[0], run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: on one, run `make bench-gpu` (it runs this check first) or `python -m pytest -m cuda`")
@pytest.mark.parametrize("family", ["lstm", "cnn", "mlp"])
def test_cuda_graphs_train_as_the_eager_steps_do(family, monkeypatch):
    """On a GPU: steps replayed from CUDA graphs leave the weights and losses of eager steps, over 4 epochs
    in which the full batches' shape is captured in the first and the last, smaller batch's in the third.

    In fp32, and every batch as wide as a multiple of the graphs' width step, so both runs launch the
    same kernels on the same shapes: what is left to differ is what the graphs do wrong."""
    monkeypatch.setattr("job.device.uses_bf16", lambda device, model=None: False)
    cuda = torch.device("cuda")
    split = _tiny_split(cuda, rows=400, widest=2 * graphs_module.GRAPH_WIDTH_STEP)
    runs = {}
    for graphs in (True, False):
        runs[graphs] = _epochs(split, cuda, 4, lambda model, optimizer, steps: steps or train.make_steps(model, optimizer, split, cuda, graphs),
                               family=family)
    steps = runs[True][2]
    assert isinstance(steps, graphs_module.GraphedSteps) and steps.graphs_on and sorted(steps.graphs) == [(16, 8), (32, 8)], "the two shapes were not both captured"
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    for name, eager in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], eager, rtol=1e-4, atol=1e-5)


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
    ids, offsets, labels = bench_seed.make_rows(20000, classes=40)
    lengths = np.diff(offsets)
    assert ids.dtype == np.int32 and lengths.min() >= 1 and lengths.max() <= bench_seed.MAX_LENGTH
    assert 6.5 < lengths.mean() < 7.5  # Poisson(6) + 1
    assert ids.min() >= 2 and ids.max() < bench_seed.VOCAB
    assert set(np.unique(labels)) == set(range(40))
    # a title's most common word names its class far above chance: the labels are learnable
    first = ids[offsets[:-1]]
    word_class = {}
    for w, c in zip(first, labels):
        word_class.setdefault(w, []).append(c)
    purity = np.mean([np.bincount(v).max() / len(v) for v in word_class.values() if len(v) >= 5])
    assert purity > 0.3
    again = bench_seed.make_rows(20000, classes=40)
    assert all(np.array_equal(a, b) for a, b in zip((ids, offsets, labels), again))  # deterministic


def test_seed_collate_pads_to_the_batch_and_the_widest_filter():
    items = [{"data": [5, 6], "target": 1}, {"data": [7], "target": 0}]
    batch = bench_seed.seed_collate(items)
    assert batch["data"].tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    assert batch["lengths"].tolist() == [2, 1] and batch["target"].tolist() == [1, 0]


def _runs(path, rates, accs):
    return [bench.Run(path, seed % 3, 1024, 1e-3, "fp32", int(rate * 10), 10.0, 0.1, 1 << 20, acc)
            for seed, (rate, acc) in enumerate(zip(rates, accs))]


def _loops(seed_style, ours):
    return {bench.LOOPS[0]: _runs(bench.LOOPS[0], *seed_style), bench.LOOPS[1]: _runs(bench.LOOPS[1], *ours)}


def test_verdicts_judge_the_ratio_of_medians_and_the_mean_over_seeds():
    cpu = torch.device("cpu")
    # round 3 ran under load for the seed-style loop only: its ratio alone would say 0.12x; the medians say 2.1x.
    # The fourth round repeats seed 0 for timing; its accuracy is not counted a second time.
    loops = _loops(([100, 100, 1000, 100], [0.80, 0.80, 0.80, 0.10]), ([210, 250, 120, 210], [0.79, 0.81, 0.80, 0.90]))
    [line] = bench.verdicts(loops, seeds=3, device=cpu)
    assert line.startswith("ours: speed-up 2.10x (ratio of medians, 4 runs; per round 0.12..2.50x; target >= 2x on cpu) PASS;")
    assert "accuracy +0.0000 (difference of means, 3 seeds; per seed -0.0100..+0.0100; target >= -0.005) PASS" in line
    assert line.endswith("overall PASS")
    slow_and_worse = _loops(([100] * 3, [0.80] * 3), ([190] * 3, [0.79, 0.80, 0.79]))
    [line] = bench.verdicts(slow_and_worse, seeds=3, device=torch.device("cuda"))
    assert "1.90x" in line and "target >= 10x on cuda) FAIL" in line and "accuracy -0.0067" in line
    assert "target >= -0.005) FAIL" in line and line.endswith("overall FAIL")
    [line] = bench.verdicts(_loops(([100] * 2, [0.8] * 2), ([300] * 2, [0.8] * 2)), seeds=2, device=cpu)
    assert "PASS" not in line and "FAIL" not in line  # one or two runs decide nothing
    assert line.count("not judged (needs >= 3") == 2 and line.endswith("overall not judged")


def test_tables_print_medians_spreads_and_means():
    loops = _loops(([100, 100, 1000, 100], [0.80, 0.80, 0.80, 0.10]), ([210, 250, 120, 210], [0.79, 0.81, 0.80, 0.90]))
    speed = bench.speed_table(loops).splitlines()
    assert speed[0].split("  ")[0] == "path" and "samples/s median" in speed[0] and "per round" in speed[0]
    assert speed[2].split()[4:8] == ["100", "100..1,000", "1.00x", "611,910"]  # 10 epochs of 6.1 M rows at the median rate, in s
    assert speed[3].split()[4:8] == ["210", "120..250", "2.10x", "0.12..2.50x"]
    accuracy = bench.accuracy_table(loops, seeds=3).splitlines()
    assert "mean of 3" in accuracy[0]
    assert accuracy[2].split()[1:] == ["0.8000", "0.8000..0.8000"]
    assert accuracy[3].split()[1:] == ["0.8000", "0.7900..0.8100", "+0.0000", "-0.0100..+0.0100"]


def test_gpu_memory_lines_show_the_pushed_gauge_of_ours_last_run_beside_the_peak():
    loops = _loops(([100] * 3, [0.8] * 3), ([300] * 3, [0.8] * 3))
    assert bench.gpu_memory_lines(loops) == []  # a CPU run reads no gauge
    loops["ours"][-1].gpu_metric = "meli_train_gpu_memory_bytes 1.048576e+08"
    assert bench.gpu_memory_lines(loops) == [
        "ours: meli_train_gpu_memory_bytes 1.048576e+08 (100 MB after training; torch's peak 1 MB)"]


def test_sizes_take_the_command_line_over_the_device_defaults():
    args = argparse.Namespace(rows=None, epochs=2, classes=None, repeats=5, seeds=None, big_batch=True, threads=None)
    sizes = bench._sizes(args, torch.device("cpu"))
    cpu = bench.DEFAULTS["cpu"]
    assert (sizes.rows, sizes.epochs, sizes.repeats, sizes.seeds, sizes.threads) == (cpu.rows, 2, 5, cpu.seeds, cpu.threads)
    assert sizes.rounds == 5 and sizes.loops == bench.LOOPS[:3] and cpu.loops == bench.LOOPS[:2]
    assert bench.DEFAULTS["cuda"].loops == bench.LOOPS  # a GPU run: seed-style, ours, ours at 4x, ours with graphs
    for key in ("repeats", "seeds", "threads"):
        with pytest.raises(UserError, match=f"--{key} 0"):
            bench._sizes(argparse.Namespace(**{**vars(args), key: 0}), torch.device("cpu"))
    with pytest.raises(UserError, match="--graphs: CUDA graphs need --device cuda"):
        bench._sizes(argparse.Namespace(**{**vars(args), "graphs": True}), torch.device("cpu"))


RUN_LINE = re.compile(r"^  round (\d+)/(\d+), seed (\d+): (.+?)\s+([\d,]+) samples/s in .* val bal acc ([\d.]+)$")


def _family_blocks(out: str) -> dict[str, str]:
    parts = re.split(r"^(lstm|cnn|mlp) \((\w+)\):$", out, flags=re.M)
    return {parts[i]: parts[i + 2] for i in range(1, len(parts), 3)}


def _table_rows(block: str, header_word: str) -> dict[str, list[str]]:
    """The rows of the table whose header holds header_word, by path, cells split on runs of 2+ spaces."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("path ") and header_word in line)
    rows = {}
    for line in lines[start + 2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] not in bench.LOOPS + tuple(f"ours, {name}" for name in bench.ALSO.values()):  # a blank line or the verdicts end the table
            break
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("family, extra, loops", [
    ("lstm", [], bench.LOOPS[:2]),  # a CPU run's default: seed-style, ours, seed-style, ours ...
    ("all", ["--big-batch", "--profile"], bench.LOOPS[:3]),
])
def test_bench_interleaves_the_loops_and_prints_medians_spreads_and_verdicts_without_heavy_imports(family, extra, loops):
    code = ("import sys; from job.__main__ import main; rc = main(sys.argv[1:]); "
            "bad = [m for m in ('gensim', 'boto3', 'hera', 'prometheus_client') if m in sys.modules]; "
            "print('heavy imports:', bad); sys.exit(rc or bool(bad))")
    run = subprocess.run([sys.executable, "-c", code, "bench", "--rows", "300", "--epochs", "1", "--device", "cpu",
                          "--family", family, "--classes", "20", "--repeats", "4", "--seeds", "3", *extra],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "300 training and 75 validation rows" in out and "20 classes" in out
    assert f"4 round(s) of {' then '.join(loops)} (seeds 0..2)" in out and "1 thread, load average" in out
    blocks = _family_blocks(out)
    assert list(blocks) == (["lstm", "cnn", "mlp"] if family == "all" else [family])
    for family, block in blocks.items():
        runs = [RUN_LINE.match(line).groups() for line in block.splitlines() if line.startswith("  round ")]
        judged, loops = loops, loops + ((f"ours, {bench.ALSO[family]}",) if family in bench.ALSO else ())  # mlp_ngrams beside mlp256
        # interleaved: seed-style, ours[, ours x4], then again; round k starts every loop from seed k mod 3
        assert [(int(k), int(n), int(s), p) for k, n, s, p, _, _ in runs] == \
            [(k, 4, (k - 1) % 3, path) for k in range(1, 5) for path in loops]
        rates = {path: [int(r[4].replace(",", "")) for r in runs if r[3] == path] for path in loops}
        accs = {path: [float(r[5]) for r in runs if r[3] == path][:3] for path in loops}
        speed, accuracy = _table_rows(block, "samples/s median"), _table_rows(block, "val bal acc")
        assert list(speed) == list(accuracy) == list(loops)
        for path in loops:
            median = int(speed[path][3].replace(",", ""))
            assert abs(median - np.median(rates[path])) <= 1  # the runs' lines are rounded too
            assert speed[path][4] == f"{min(rates[path]):,}..{max(rates[path]):,}"
            assert abs(float(accuracy[path][0]) - np.mean(accs[path])) <= 1e-4  # the mean of the first run of each seed
            assert accuracy[path][1] == f"{min(accs[path]):.4f}..{max(accs[path]):.4f}"
        assert speed["seed-style"][5] == "1.00x" and re.fullmatch(r"[\d.]+\.\.[\d.]+x", speed["ours"][6])
        assert re.fullmatch(r"[+-][\d.]+", accuracy["ours"][2]) and re.fullmatch(r"[+-][\d.]+\.\.[+-][\d.]+", accuracy["ours"][3])
        verdicts = [line for line in block.splitlines() if line.startswith("ours") and "overall" in line]
        assert len(verdicts) == len(judged) - 1  # the named config beside is shown, not judged
        loops = judged
        for v in verdicts:
            assert "(ratio of medians, 4 runs; per round" in v and "target >= 2x on cpu)" in v
            assert "(difference of means, 3 seeds; per seed" in v and "target >= -0.005)" in v
            assert re.search(r"\) (PASS|FAIL); accuracy .*\) (PASS|FAIL); overall (PASS|FAIL)$", v), v
        profiled = re.search(r"^profile of ours, \d+ steps of batch \d+ after \d+ unprofiled: [\d.]+ ms a step", block, re.M)
        assert bool(profiled) == ("--profile" in extra)
        assert "meli_train_gpu_memory_bytes" not in block  # read on CUDA only
    assert "heavy imports: []" in out


@pytest.mark.slow
def test_tfidf_bench_prints_each_phase_and_the_extrapolation():
    run = subprocess.run([sys.executable, "-m", "job", "bench", "--tfidf", "--rows", "3000", "--classes", "6",
                          "--threads", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "3,000 training and 750 validation synthetic rows, 6 categories, config tfidf" in out
    for phase in ("synthesize", "tokenize", "fit n-grams", "features", "fit SVM"):
        assert re.search(rf"^  {phase} +[\d.]+ s \(CPU +[\d.]+ s\) +peak resident +[\d.]+ GiB$", out, re.M), phase
    bacc = float(re.search(r"validation balanced accuracy ([\d.]+); SVM converged, 2 thread\(s\)", out).group(1))
    assert bacc > 0.5  # 6 categories: chance is 0.17
    assert re.search(r"^extrapolated to 4,900,000 rows and 632 categories, 2 thread\(s\): .* SVM [\d,]+ s", out, re.M)

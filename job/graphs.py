"""CUDA graphs for the training step: each batch shape's whole step captured once, then replayed.

train.py takes its steps through one seam, `train.make_steps`: an eager `train.StepRunner`, or, on CUDA with
the sweep's `cuda_graphs` setting on (`train --cuda-graphs true`, the Argo parameter `cuda-graphs`,
`make submit CUDA_GRAPHS=true`), a `GraphedSteps` wrapped around it. Both offer the same three things,
`loss_sum`, `stream()` and `take(order, batch)`, so the loop reads the same with graphs or without.
This module imports nothing of job; `python -m job bench --graphs` measures it (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

import torch

log = logging.getLogger("job.graphs")

GRAPH_WARMUP = 2  # a batch shape's first steps run eagerly (on real batches: they are training steps) before capture
GRAPH_SHAPES = 48  # at most this many shapes captured in a run; a rarer shape past them runs eagerly
GRAPH_WIDTH_STEP = 4  # with graphs, a batch is padded to a multiple of this many tokens: fewer shapes to capture


class GraphedSteps:
    """The training steps of a run on CUDA, replayed from CUDA graphs, kept from epoch to epoch.

    At batch 1024 an eager step is bound by the host, about 4.8 ms of Python and kernel launches for
    1.3 ms of GPU work (docs/performance.md). So the whole step of each batch shape (rows, width) is
    captured once as a CUDA graph, forward, backward and fused Adam, and then replayed: one index
    copy and one launch a step. Batches are padded to a multiple of GRAPH_WIDTH_STEP tokens, which
    changes no logit (the models read no padding), so that a few shapes cover an epoch. A shape's
    first GRAPH_WARMUP steps run eagerly (the eager steps' `take`), as real training steps, so that
    the optimizer's state exists and cuDNN and cuBLAS have made their choices before capture. The
    gradients are set to None before a capture, so a replay writes them rather than adding to them.
    Everything runs on one side stream (capture needs one), which `stream()` enters; the graphs
    share one memory pool, since they never run at once. A failed capture logs why and leaves the
    run eager. A batch cut into several pieces (a CPU's way) is never captured.
    """

    graphs_on = True  # False once a capture failed: the run goes on eagerly

    def __init__(self, eager):
        """eager: the run's train.StepRunner, whose loss sum and forward/backward the graphs capture."""
        self.eager = eager
        self.optimizer, self.split, self.device = eager.optimizer, eager.split, eager.device
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # (rows, width) -> graph, index
        self.eager_runs: Counter = Counter()  # steps taken eagerly per shape
        self.side = torch.cuda.Stream(self.device)
        self.pool = torch.cuda.graph_pool_handle()

    @property
    def loss_sum(self) -> torch.Tensor:
        return self.eager.loss_sum  # one tensor: a captured step adds into it as an eager one does

    @contextlib.contextmanager
    def stream(self):
        """The side stream, after the work before it and before the work after."""
        caller = torch.cuda.current_stream(self.device)
        self.side.wait_stream(caller)
        try:
            with torch.cuda.stream(self.side):
                yield
        finally:
            caller.wait_stream(self.side)

    def take(self, order_t: torch.Tensor, batch: list[tuple[int, int, int]]) -> None:
        """One optimizer step over the batch: its shape's graph replayed, or an eager step."""
        if not self.graphs_on or len(batch) != 1:
            self.eager.take(order_t, batch)
            return
        (start, end, width), = batch
        rows = end - start
        width = min(-(-width // GRAPH_WIDTH_STEP) * GRAPH_WIDTH_STEP, self.split.tokens.shape[1])
        graph = self.graphs.get((rows, width)) or self._maybe_capture(rows, width)
        if graph is None:
            self.eager_runs[(rows, width)] += 1
            self.eager.take(order_t, [(start, end, width)])
            return
        g, index = graph
        index.copy_(order_t[start:end])
        g.replay()

    def _maybe_capture(self, rows: int, width: int):
        """The shape's graph, captured now, once it has run eagerly GRAPH_WARMUP times; None to run it eagerly."""
        shape = (rows, width)
        if self.eager_runs[shape] < GRAPH_WARMUP or len(self.graphs) >= GRAPH_SHAPES:
            return None
        index = torch.zeros(rows, dtype=torch.int64, device=self.device)  # the step's rows, copied in before each replay
        graph = torch.cuda.CUDAGraph()
        for group in self.optimizer.param_groups:
            group["capturable"] = True  # Adam's step count stays on the device (a resumed checkpoint may say False)
        # torch warns once when a capturable optimizer steps outside a graph: here that is a rare shape, expected
        self.optimizer._warned_capturable_if_run_uncaptured = True
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=self.side):
                self.eager.forward_backward(index, width, rows)
                self.optimizer.step()
        except RuntimeError as e:
            log.warning("CUDA graph capture of a %d x %d batch failed, training goes on eagerly: %s",
                        rows, width, str(e).splitlines()[0][:300])
            self.graphs_on = False
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.graphs[shape] = (graph, index)
        log.debug("captured the training step of a %d x %d batch as a CUDA graph (%d shapes)", rows, width, len(self.graphs))
        return self.graphs[shape]

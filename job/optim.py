"""The optimizers training uses: fused Adam, with RowAdam beside it for embedding tables whose gradients are sparse.

build_optimizer chooses; the checkpoint keeps its state_dict (job/train.py).
"""

from __future__ import annotations

import torch


class RowAdam(torch.optim.Optimizer):
    """Adam over the rows of a table that a step's sparse gradient touches ("lazy" Adam, as SparseAdam).

    torch's SparseAdam costs about two whole MLP steps a step on mlp_ngrams' bigram table (docs/performance.md,
    "mlp_ngrams beside mlp256"); gathering the touched rows, updating them and scattering them back takes a
    fraction of that.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                denom = (v / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
                p.index_add_(0, rows, m.div_(denom), alpha=-group["lr"] / (1 - beta1 ** step))


class DenseAndSparseAdam:
    """Fused Adam over the dense parameters and RowAdam over the sparse-gradient ones, stepped as one.

    The sparse ones are tables whose gradient touches only the rows a batch uses (mlp_ngrams' n-gram
    buckets): a dense Adam step would read and write the whole table every step. Those tables get no
    weight decay.
    """

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer):
        self.dense, self.sparse = dense, sparse

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups + self.sparse.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float):
    """Adam over the trained parameters, fused: one kernel for all of them (no host sync on CUDA; on a
    CPU it replaces about ten small ops per parameter: docs/performance.md, "What our path does, and why").
    Embedding tables with sparse gradients get RowAdam beside it (DenseAndSparseAdam)."""
    sparse_tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_tables]
    dense = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    sparse = [p for p in model.parameters() if p.requires_grad and id(p) in sparse_tables]
    return DenseAndSparseAdam(dense, RowAdam(sparse, lr=lr)) if sparse else dense

"""What one Argo Workflow can hold: the stages its DAG was unrolled to, and the size of its object.

The plan step of a sweep on Argo checks both before any pod trains, so that a sweep too big for its
Workflow fails at once, in one line, instead of hours in:

- Stages. The DAG is unrolled to a number of rounds and rungs when it is rendered (workflows/dag.py): a
  standalone Workflow to what its own settings need, the chart's WorkflowTemplate to the most a sweep may
  have (job/search.py: MAX_ROUNDS, MAX_RUNGS). A sweep whose search needs more is refused.
- Size. A Workflow is one etcd object. The controller compresses the node status only when the whole
  object's JSON passes MAX_WORKFLOW_SIZE (1 MiB by default), and fails the workflow when even the compressed
  object is larger (workflow/packer/packer.go: CompressWorkflowIfNeeded, "workflow is longer than maximum
  allowed size"). It keeps the nodes elsewhere only with node status offloading, which needs a database
  (docs/offloading-large-workflows.md). The estimate here is an upper bound, from the node counts of the
  sweep's search and from per-node and fixed sizes measured on the harness' own runs (tests/test_search_argo.py).

Nothing here imports torch; it reads nothing from the store.
"""

from __future__ import annotations

from pathlib import Path

from job.errors import UserError

WORKFLOW_SIZE_LIMIT = 1024 * 1024  # bytes: the controller's MAX_WORKFLOW_SIZE default (workflow/packer/packer.go)
# The Workflow object without its nodes: the sweep's spec, and the spec of the chart's WorkflowTemplate that the
# controller stores in its status (storedWorkflowTemplateSpec), unrolled to the most stages; bytes of JSON.
FIXED_BYTES = 200_000
# One node of the status, gzipped and base64-encoded as the controller stores compressed nodes (file.go:
# CompressEncodeString), at the most; a train pod's node with its inputs (name, label, spec, epochs) is the largest.
NODE_BYTES = 250
FIXED_NODES = 4  # the DAG, plan, prepare, aggregate
STAGE_NODES = 4  # per stage after the first: next, and the TaskGroup (or Skipped node) of each of its three fan-outs
ITEM_NODES = 2  # per run trained in a stage: its Retry node and its first pod; each retry adds a pod
FIRST_STAGE_NODES = 3  # the three fan-outs of plan's lists (GPU runs, CPU runs, GPU pods of several runs)


def nodes(stages: int, items: int, retries: int = 0) -> int:
    """Nodes of a sweep's Workflow at most: `stages` unrolled, `items` runs trained over all stages."""
    return FIXED_NODES + FIRST_STAGE_NODES + STAGE_NODES * (stages - 1) + (ITEM_NODES + retries) * items


def workflow_bytes(stages: int, items: int) -> int:
    """An upper bound of the Workflow object's size, with its node status compressed."""
    return FIXED_BYTES + NODE_BYTES * nodes(stages, items)


def largest_sweep(stages: int, limit: int = WORKFLOW_SIZE_LIMIT) -> int:
    """The most run-trainings (a run counts once per stage it trains in) a Workflow of `stages` holds."""
    return max(0, (limit - FIXED_BYTES) // NODE_BYTES - nodes(stages, 0)) // ITEM_NODES


def check(rounds: int, rungs: int, items: int, max_rounds: int | None, max_rungs: int | None, max_bytes: int) -> None:
    """Refuse, in one line, a sweep that its Workflow cannot hold: more rounds or rungs than the DAG was
    unrolled to, or an object past max_bytes (0: no size check, for a controller that offloads node status)."""
    if max_rounds is not None and max_rungs is not None and (rounds > max_rounds or rungs > max_rungs):
        raise UserError(f"search: {rounds} round(s) of {rungs} rung(s), but this workflow carries {max_rounds} of "
                        f"{max_rungs}: render it again with these settings (make render), or lower --rounds, "
                        "or raise --min-epochs or --halving")
    stages = (max_rounds or rounds) * (max_rungs or rungs)
    size = workflow_bytes(stages, items)
    if max_bytes and size > max_bytes:
        raise UserError(f"search: {items} run-trainings over {stages} stages make a Workflow of about {size:,} bytes, "
                        f"past the controller's MAX_WORKFLOW_SIZE of {max_bytes:,} (at most about "
                        f"{largest_sweep(stages, max_bytes)} here): lower --trials or --rounds, or turn on the "
                        "controller's node status offloading and set max-workflow-bytes to 0")


def write_shape(folder: str, rounds: int, rungs: int) -> None:
    """The search's shape as two plain numbers, the Argo outputs that decide which stages run."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "rounds").write_text(str(rounds))
    (Path(folder) / "rungs").write_text(str(rungs))


def trainings(sweep, shape) -> int:
    """Run-trainings of a search.Sweep over its rounds and rungs at most: each rung keeps max(1, n // ETA) of
    the n before it (job/search.py: Schedule.promoted), fewer when runs fail or a round samples fewer trials."""
    eta = sweep.settings.halving
    total = len(sweep.once)
    for round_ in range(1, shape.rounds + 1):
        n = len(sweep.spaces) * sweep.settings.trials + (len(sweep.plain) + len(sweep.added) if round_ == 1 else 0)
        for _ in range(shape.rungs):
            total += n
            n = max(1, n // eta) if eta and n else 0
    return total

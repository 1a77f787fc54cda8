"""The sweep's steps, defined once: the `python -m job ...` commands and their arguments.

The local sweep (`python -m job sweep`) calls these with real values; the Argo
workflow (`workflows/dag.py`) calls the same functions with Argo template
expressions such as `{{item.spec}}`. Nothing here imports torch.

A sweep, with or without a search, is this sequence (job/local.py runs it; the DAG unrolls it):

    prepare
    for round in 1..R, for rung in 0..K-1:          R, K: search.shape_of(...), at most MAX_ROUNDS, MAX_RUNGS
        next --round round --rung rung  ->  [{name, spec, label, epochs}, ...]   ([] : nothing to train)
        train --config spec --epochs epochs, for each item (a promoted run continues from its checkpoint)
    aggregate

`plan` is `next` for round 1, rung 0, which needs no results. Every step that takes the search settings
takes them as the same flags (search_args), whose defaults mean no search: one round, one rung, every
listed run trained once to its config's epochs, exactly as a sweep without them.

Output layout under one prefix OUT:

    OUT/prepared/<hash>/...                      prepared data, manifest.json written last
    OUT/sweeps/<sweep>/<run>/                    metrics.jsonl, checkpoint.pt, model.pt, summary.json (job/runfiles.py)
    OUT/sweeps/<sweep>/report/                   plots and summary.{csv,json,md}
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from job import search
from job.runfiles import run_uri, sweep_uri

MODULE = ["python", "-m", "job"]  # the command every pod and the local runner start


def write_result(result_file: str | None, text: str) -> None:
    """What a step leaves at --result-file: an Argo output parameter (valueFrom.path), one plain value."""
    if result_file:
        Path(result_file).write_text(text)


def report_uri(out: str, sweep: str) -> str:
    return f"{sweep_uri(out, sweep)}/report"


# The files aggregate writes into <sweep>/report/, in the order it writes them: summary.json last, as the
# mark of a complete report. The Argo aggregate step declares each as an output artifact.
REPORT_FILES = (
    "summary.md",
    "comparison.png",
    "balanced_accuracy.png",
    "train_loss.png",
    "validation_loss.png",
    "summary.csv",
    "per_class.csv",
    "recall_by_class_size.png",
    "search.png",  # a search's sampled values against validation balanced accuracy (parallel coordinates)
    "summary.json",
)


# Parameters a sweep cannot run without, and that nothing may fill in for it: the Argo sweep's plan step refuses
# them empty, and the chart's WorkflowTemplate gives them no default (a sweep never runs on a placeholder bucket).
REQUIRED = ("data", "embeddings", "out", "image")
# The search flags, shared by sweep, plan, next and aggregate: --trials, --search, --search-seed, --halving,
# --min-epochs, --rounds. Their defaults (job/search.py: Search) mean no search.
SEARCH_FLAGS = search.FLAGS
MAX_RUNGS = search.MAX_RUNGS  # the most rungs a sweep may have: a template unrolled to rungs carries this many
MAX_ROUNDS = search.MAX_ROUNDS  # the most rounds a sweep may have: a template unrolled to rounds carries this many


def search_args(values: Mapping[str, object] | search.Search | None = None) -> list[str]:
    """The search settings as command-line flags: `--trials 27 --halving 3 ...`.

    values: a search.Search, or a mapping of some of SEARCH_FLAGS to values or to Argo expressions
    (`{"trials": "{{workflow.parameters.trials}}", ...}`); a flag left out takes the step's default.
    """
    if values is None:
        return []
    if isinstance(values, search.Search):
        values = values.flags()
    unknown = sorted(set(values) - set(SEARCH_FLAGS))
    if unknown:
        raise ValueError(f"search_args: unknown search settings {unknown}; known: {', '.join(SEARCH_FLAGS)}")
    args: list[str] = []
    for name in SEARCH_FLAGS:  # a fixed order: the same settings always give the same command
        if name in values:
            args += ["--" + name.replace("_", "-"), str(values[name])]
    return args


def plan(configs: str, baseline: str = "true", result_file: str | None = None, cpu_result_file: str | None = None,
         search_settings: Mapping[str, object] | search.Search | None = None, capacity: tuple[int, int] | None = None,
         shape_dir: str | None = None, max_workflow_bytes: str | int | None = None,
         parameters: dict[str, str] | None = None, runs_per_gpu: str | int | None = None,
         group_result_file: str | None = None) -> list[str]:
    """Check the config specs and search settings (every one, before any work) and list round 1's first rung:
    prints (and writes to result_file) the JSON list `next --round 1 --rung 0` gives, {name, spec, label,
    epochs}, plus the tfidf baseline when baseline is "true". It reads no results. With cpu_result_file, the
    runs that train on a CPU (configs.CPU_FAMILIES) go there and only the others to result_file.

    For Argo (job/capacity.py): capacity, the (rounds, rungs) the DAG was unrolled to; shape_dir, where the
    search's rounds and rungs go as two files; max_workflow_bytes, the Workflow size past which plan refuses;
    parameters, the sweep's parameters by name, as resolved: plan logs each and refuses an empty REQUIRED one.
    runs_per_gpu, group_result_file: as next_runs."""
    args = MODULE + ["plan", "--configs", configs, "--baseline", baseline] + search_args(search_settings)
    args += _list_files(result_file, cpu_result_file, runs_per_gpu, group_result_file)
    if capacity:
        args += ["--max-rounds", str(capacity[0]), "--max-rungs", str(capacity[1])]
    if shape_dir:
        args += ["--shape-dir", shape_dir]
    if max_workflow_bytes is not None:
        args += ["--max-workflow-bytes", str(max_workflow_bytes)]
    for name, value in (parameters or {}).items():
        args += ["--parameter", f"{name}={value}"]
    return args


def next_runs(out: str, sweep: str, configs: str, baseline: str, round_: str | int, rung: str | int,
              search_settings: Mapping[str, object] | search.Search | None = None,
              result_file: str | None = None, cpu_result_file: str | None = None,
              runs_per_gpu: str | int | None = None, group_result_file: str | None = None) -> list[str]:
    """The runs to train at a round and rung: `python -m job next`.

    Reads the finished runs' results so far from OUT/sweeps/SWEEP/ (local or s3://) and prints (and writes
    to result_file) a JSON list of {name, spec, label, epochs}: names and specs, never results, so that it
    stays small enough for an Argo parameter (withParam). `epochs` is the rung's budget r_k for that run
    (capped at its config's epochs); train it with train(..., epochs=). The list is [] past the last round
    or rung, or when no run of the rung before finished it. Round 1 rung 0 is what `plan` prints.
    Idempotent: a function of the command line and the results of earlier rungs and rounds, so a
    killed `next` run again writes the same list. Ties go to the name that sorts first; a run that failed
    or did not finish a rung is never promoted. With cpu_result_file, as plan.
    With group_result_file, the GPU runs go in pods of up to runs_per_gpu runs: when runs_per_gpu is above 1,
    group_result_file gets the list of pods, {label, runs, round, rung} (runs: the JSON list of the pod's
    items, for train_group) and result_file gets []; at 1, the pods' list is [] and result_file is as without.
    """
    args = MODULE + ["next", "--out", out, "--sweep", sweep, "--configs", configs, "--baseline", baseline,
                     "--round", str(round_), "--rung", str(rung)] + search_args(search_settings)
    return args + _list_files(result_file, cpu_result_file, runs_per_gpu, group_result_file)


def _list_files(result_file: str | None, cpu_result_file: str | None, runs_per_gpu: str | int | None,
                group_result_file: str | None) -> list[str]:
    """Where plan and next leave their lists, and the GPU runs per pod."""
    args: list[str] = []
    if result_file:
        args += ["--result-file", result_file]
    if cpu_result_file:
        args += ["--cpu-result-file", cpu_result_file]
    if runs_per_gpu is not None:
        args += ["--runs-per-gpu", str(runs_per_gpu)]
    if group_result_file:
        args += ["--group-result-file", group_result_file]
    return args


def prepare(data: str, embeddings: str, out: str, result_file: str | None = None, workers: str | None = None) -> list[str]:
    """Prepare the data once; prints (and writes to result_file) the prepared URI.

    workers: tokenizing processes; None = the usable cores, which in a pod with no CPU limit are all the node's.
    """
    args = MODULE + ["prepare", "--data", data, "--embeddings", embeddings, "--out", out]
    if workers:
        args += ["--workers", workers]
    if result_file:
        args += ["--result-file", result_file]
    return args


def train(spec: str, prepared: str, out: str, sweep: str, run: str, result_file: str | None = None,
          epochs: str | int | None = None, round_: str | int | None = None, rung: str | int | None = None,
          cuda_graphs: str | None = None) -> list[str]:
    """Train one run; writes its test balanced accuracy to result_file when given. `sweep` groups its metrics.

    epochs: the budget, train to this epoch (a next item's `epochs`); None = the config's epochs. The budget
    is not part of the run's identity: a run trained to 3 and then given 9 continues from its checkpoint
    (optimizer and RNG state included) and ends bit-exactly where a run trained to 9 at once ends (on a CPU).
    A run already trained to the budget, or stopped early, is left as it is.
    round_, rung: the stage of a search that trains it (a next item's `round` and `rung`), for its log and its
    MLflow tags; they change nothing in the training.
    cuda_graphs: "true" to replay each batch shape's step as a CUDA graph on CUDA (job/graphs.py); None: train's
    default, eager steps.
    """
    args = MODULE + ["train", "--config", spec, "--prepared", prepared, "--out", run_uri(out, sweep, run), "--sweep", sweep]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if round_ is not None and rung is not None:
        args += ["--round", str(round_), "--rung", str(rung)]
    if cuda_graphs is not None:
        args += ["--cuda-graphs", str(cuda_graphs)]
    if result_file:
        args += ["--result-file", result_file]
    return args


def train_group(runs: str, prepared: str, out: str, sweep: str, result_file: str | None = None,
                cuda_graphs: str | None = None) -> list[str]:
    """Train a pod's runs at once, one `train` process each (the command above) sharing the pod's GPU.

    runs: the JSON list of the pod's items, {name, spec, epochs, round, rung} (a pod of plan's or next's
    group list). Exits non-zero when any run failed; a rerun resumes every unfinished run and skips the
    finished ones, as train does. result_file: a JSON object, each run's test balanced accuracy ("nan" when
    it failed).
    """
    args = MODULE + ["train-group", "--runs", runs, "--prepared", prepared, "--out", out, "--sweep", sweep]
    if cuda_graphs is not None:
        args += ["--cuda-graphs", str(cuda_graphs)]
    if result_file:
        args += ["--result-file", result_file]
    return args


def aggregate(out: str, sweep: str, configs: str, report_dir: str | None = None,
              search_settings: Mapping[str, object] | search.Search | None = None,
              baseline: str | None = None) -> list[str]:
    """Join the runs of a sweep into its report; runs that failed or are missing are listed.

    With search settings, the report also shows each run's round and rung and the epochs it trained, the
    sampled values against validation balanced accuracy (search.png), parameter importance, and
    the epochs spent against training every run fully.
    baseline: "true" or "false", as given to next (None: the step's default, "true").
    report_dir: also leave the report files in this local folder (the Argo step uploads them as artifacts).
    """
    args = MODULE + ["aggregate", "--out", out, "--sweep", sweep, "--configs", configs] + search_args(search_settings)
    if baseline is not None:
        args += ["--baseline", baseline]
    if report_dir:
        args += ["--report-dir", report_dir]
    return args

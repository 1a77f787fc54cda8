"""The sweep's steps, defined once: the `python -m job ...` commands and their arguments.

The local sweep (`python -m job sweep`) calls these with real values; the Argo
workflow (`workflows/dag.py`) calls the same functions with Argo template
expressions such as `{{item.spec}}`. Nothing here imports torch.

Output layout under one prefix OUT:

    OUT/prepared/<hash>/...                      prepared data, manifest.json written last
    OUT/sweeps/<sweep>/<run>/                    metrics.jsonl, checkpoint.pt, model.pt, summary.json
    OUT/sweeps/<sweep>/report/                   plots and summary.{csv,json,md}
"""

from __future__ import annotations

from pathlib import Path

MODULE = ["python", "-m", "job"]  # the command every pod and the local runner start


def write_result(result_file: str | None, text: str) -> None:
    """What a step leaves at --result-file: an Argo output parameter (valueFrom.path), one plain value."""
    if result_file:
        Path(result_file).write_text(text)


def sweep_uri(out: str, sweep: str) -> str:
    return f"{out.rstrip('/')}/sweeps/{sweep}"


def run_uri(out: str, sweep: str, run: str) -> str:
    """A run's folder."""
    return f"{sweep_uri(out, sweep)}/{run}"


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
    "summary.json",
)


# Parameters a sweep cannot run without, and that nothing may fill in for it: the Argo sweep's plan step refuses
# them empty, and the chart's WorkflowTemplate gives them no default (a sweep never runs on a placeholder bucket).
REQUIRED = ("data", "embeddings", "out", "image")


def plan(configs: str, baseline: str = "true", result_file: str | None = None, cpu_result_file: str | None = None,
         parameters: dict[str, str] | None = None) -> list[str]:
    """Check and expand the config specs, plus the tfidf baseline when baseline is "true"; prints (and
    writes to result_file) a JSON list of {name, spec, label}. With cpu_result_file, the runs that train on
    a CPU (configs.CPU_FAMILIES) go there and only the others to result_file.

    parameters: the sweep's parameters by name, as resolved; plan logs each and refuses an empty REQUIRED one.
    """
    args = MODULE + ["plan", "--configs", configs, "--baseline", baseline]
    if result_file:
        args += ["--result-file", result_file]
    if cpu_result_file:
        args += ["--cpu-result-file", cpu_result_file]
    for name, value in (parameters or {}).items():
        args += ["--parameter", f"{name}={value}"]
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


def train(spec: str, prepared: str, out: str, sweep: str, run: str, result_file: str | None = None) -> list[str]:
    """Train one run; writes its test balanced accuracy to result_file when given. `sweep` groups its metrics."""
    args = MODULE + ["train", "--config", spec, "--prepared", prepared, "--out", run_uri(out, sweep, run), "--sweep", sweep]
    if result_file:
        args += ["--result-file", result_file]
    return args


def aggregate(out: str, sweep: str, configs: str, report_dir: str | None = None) -> list[str]:
    """Join the runs of a sweep into its report; runs that failed or are missing are listed.

    report_dir: also leave the report files in this local folder (the Argo step uploads them as artifacts).
    """
    args = MODULE + ["aggregate", "--out", out, "--sweep", sweep, "--configs", configs]
    if report_dir:
        args += ["--report-dir", report_dir]
    return args

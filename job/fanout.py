"""The plan and next steps: the lists of runs that Argo fans out over (withParam), and nothing else.

    python -m job plan --configs hidden50,hidden100 --result-file /tmp/runs.json
    python -m job next --out s3://b/meli --sweep demo --configs ... --round 1 --rung 1 --result-file /tmp/runs.json

plan lists round 1, rung 0 and checks the sweep's size and parameters before anything trains; next
lists a later round or rung from the results in the output store (job/search.py chooses them). With
--cpu-result-file, each writes two lists: the runs for GPU pods and the tfidf runs for CPU pods.
"""

from __future__ import annotations

import json
import logging
import re

from job import capacity, configs, search, storage
from job.errors import UserError
from job.steps import REQUIRED, write_result

log = logging.getLogger("job.plan")


def plan(text: str, baseline: bool = True, settings=None) -> list[dict]:
    """The runs of a sweep's first round and rung as JSON-ready items, the list Argo fans out over (withParam):
    {name, spec, label, epochs}. Without search settings, every listed run, trained to its epochs.

    `label` is the run's name in the Argo UI (the train node's display name).
    """
    return search.next_items(text, baseline, settings or search.Search(), 1, 0)


def by_device(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """Items of plan or next in two lists: the runs for GPU pods, and the runs of CPU_FAMILIES for CPU pods."""
    cpu = [configs.parse_one(item["spec"]).config.family in configs.CPU_FAMILIES for item in items]
    return [i for i, c in zip(items, cpu) if not c], [i for i, c in zip(items, cpu) if c]


def check_parameters(items: list[str]) -> None:
    """Log the sweep's parameters as resolved (the Argo UI shows plan's log), then refuse, in one line, the
    required ones that nothing set (steps.REQUIRED)."""
    values = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--parameter {item!r}: expected NAME=VALUE")
        values[name] = value
        log.info("parameter %s = %s", name, value)
    empty = [name for name in REQUIRED if name in values and not values[name].strip()]
    if empty:
        verb = "is" if len(empty) == 1 else "are"
        raise UserError(f"parameter{'s' if len(empty) > 1 else ''} {', '.join(empty)} {verb} empty: set "
                        f"{'it' if len(empty) == 1 else 'them'} when submitting (make submit DATA=s3://... "
                        "EMBEDDINGS=s3://...|none OUT=s3://..., argo submit -p data=...) or in the chart's "
                        "workflowTemplate.parameters")


def write_lists(items: list[dict], result_file: str | None, cpu_result_file: str | None, runs_per_gpu: int = 1,
                group_result_file: str | None = None) -> str:
    """What plan and next leave for Argo: the JSON list at result_file, or with cpu_result_file, the GPU runs there
    and the CPU runs (by_device) at cpu_result_file. With group_result_file, the GPU runs in pods of up to
    runs_per_gpu (gpu_pods) there, and none at result_file, when runs_per_gpu is above 1; [] there at 1. Returns
    the whole list's JSON, which the step prints."""
    if runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu {runs_per_gpu}: must be >= 1 (1: a pod per run)")
    text = json.dumps(items)
    gpu, cpu = by_device(items) if cpu_result_file else (items, [])
    pods = gpu_pods(gpu, runs_per_gpu) if group_result_file and runs_per_gpu > 1 else []
    write_result(result_file, json.dumps([] if pods else gpu))
    write_result(cpu_result_file, json.dumps(cpu))
    write_result(group_result_file, json.dumps(pods))
    return text


_STAGE = re.compile(r"^r\d+k\d+-")  # the stage a label starts with in a sweep of several (search.Schedule.items)


def gpu_pods(items: list[dict], k: int) -> list[dict]:
    """A stage's GPU runs in pods of up to k, in order: {label, runs, round, rung}, runs the JSON list of the pod's
    items (what train-group takes). The label, the pod's name in the Argo UI, is its runs' labels joined by
    "." after their stage, once (r2k1-hidden50.hidden100), hashed as display_labels does when too long."""
    pods = []
    for start in range(0, len(items), k):
        chunk = items[start:start + k]
        stage = _STAGE.match(chunk[0]["label"])
        prefix = stage.group(0) if stage and all(i["label"].startswith(stage.group(0)) for i in chunk) else ""
        joined = prefix + ".".join(i["label"][len(prefix):] for i in chunk)
        pods.append({"label": configs.display_labels([joined])[0], "runs": json.dumps(chunk),
                     "round": chunk[0]["round"], "rung": chunk[0]["rung"]})
    return pods


def plan_main(args) -> int:
    if args.baseline not in ("true", "false"):
        raise UserError(f"--baseline {args.baseline!r}: expected true or false")
    check_parameters(args.parameter)
    baseline = args.baseline == "true"
    settings = search.from_args(args)
    sweep = search.parse(args.configs, baseline, settings)
    shape = search.shape(sweep)
    capacity.check(shape.rounds, shape.rungs, capacity.trainings(sweep, shape), args.max_rounds, args.max_rungs,
                   args.max_workflow_bytes)
    text = write_lists(plan(args.configs, baseline, settings), args.result_file, args.cpu_result_file, args.runs_per_gpu,
                       args.group_result_file)
    if args.shape_dir:
        capacity.write_shape(args.shape_dir, shape.rounds, shape.rungs)
    print(text)
    return 0


def next_main(args) -> int:
    if args.baseline not in ("true", "false"):
        raise UserError(f"--baseline {args.baseline!r}: expected true or false")
    storage.check_uri(args.out, "--out")
    storage.join(args.out, args.sweep)  # refuses a sweep id that is not a plain name
    items = search.next_items(args.configs, args.baseline == "true", search.from_args(args), args.round, args.rung, args.out, args.sweep)
    print(write_lists(items, args.result_file, args.cpu_result_file, args.runs_per_gpu, args.group_result_file))
    return 0

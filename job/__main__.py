"""Command line of the training job: `python -m job <step> ...`.

Steps: synth, plan, next, prepare, train, train-group, aggregate, sweep (all of them on one machine), predict, bench.
Each module is imported only when its step runs, so light steps start fast.
Errors a user can fix print one line and exit non-zero, with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from job import search
from job.errors import run_cli


def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a finished run folder, e.g. <out>/sweeps/<sweep>/best, local or s3://")
    p.add_argument("--input", required=True, help="titles: .csv or .jsonl (optionally .gz) with a title column [and id]")
    p.add_argument("--out", required=True, help="output CSV, local or s3://")
    p.add_argument("--top-k", type=int, default=1, help="categories per title, best first (default: 1)")
    p.add_argument("--strict", action="store_true",
                   help="refuse the input when a title is empty or has no known word (default: predict it from no words, "
                        "the model's prior, and say on which lines)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")


def group_arguments(p: argparse.ArgumentParser) -> None:
    """plan's and next's GPU runs per pod."""
    p.add_argument("--runs-per-gpu", type=int, default=1,
                   help="GPU runs trained at once in one pod, sharing its GPU (default: 1, a pod per run)")
    p.add_argument("--group-result-file",
                   help="write the GPU pods here, {label, runs, round, rung} each, when --runs-per-gpu is above 1 "
                        "(then --result-file gets []); [] at 1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m job", description="meli-sweep: train MercadoLibre title classifiers.")
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")

    s = sub.add_parser("synth", help="write deterministic synthetic data in the challenge's CSV format")
    s.add_argument("--rows", type=int, default=60000, help="rows to write (default: 60000)")
    s.add_argument("--categories", type=int, default=60, help="number of categories (default: 60)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--out", required=True, help="output file: .csv or .csv.gz, local or s3://")

    s = sub.add_parser("plan", help="check and expand config specs into the sweep's runs (JSON)")
    s.add_argument("--configs", required=True, help="comma-separated config specs, e.g. hidden50,hidden100:lr=1e-3|3e-4")
    s.add_argument("--result-file", help="also write the JSON list to this file (an Argo output parameter)")
    s.add_argument("--cpu-result-file", help="write the runs that train on a CPU (tfidf) here instead, and only the "
                                             "GPU runs to --result-file (the sweep's two fan-outs)")
    group_arguments(s)
    s.add_argument("--baseline", default="true", help="true or false: add the tfidf baseline run unless listed (default: true)")
    s.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="a sweep parameter as resolved, logged; an empty data, embeddings, out or image is refused (repeatable)")
    search.add_arguments(s)
    s.add_argument("--max-rounds", type=int, help="the rounds the Argo DAG was unrolled to: a search that needs more is refused")
    s.add_argument("--max-rungs", type=int, help="the rungs the Argo DAG was unrolled to: a search that needs more is refused")
    s.add_argument("--shape-dir", help="write the search's rounds and rungs here, as the files rounds and rungs (Argo outputs)")
    s.add_argument("--max-workflow-bytes", type=int, default=0,
                   help="refuse a sweep whose Argo Workflow would pass this size (the controller's MAX_WORKFLOW_SIZE); "
                        "0: no check (default)")

    s = sub.add_parser("next", help="the runs to train at a round and rung of a search, from the results so far (JSON)")
    s.add_argument("--out", required=True, help="the sweep's output prefix, local or s3://")
    s.add_argument("--sweep", required=True, help="the sweep id: its runs are under <out>/sweeps/<sweep>/")
    s.add_argument("--configs", required=True, help="the sweep's config specs, as given to plan")
    s.add_argument("--baseline", default="true", help="true or false, as given to plan (default: true)")
    s.add_argument("--round", type=int, required=True, help="the round, from 1")
    s.add_argument("--rung", type=int, required=True, help="the rung of successive halving, from 0")
    s.add_argument("--result-file", help="also write the JSON list to this file (an Argo output parameter)")
    s.add_argument("--cpu-result-file", help="write the runs that train on a CPU (tfidf) here instead, and only the "
                                             "GPU runs to --result-file, as plan does")
    group_arguments(s)
    search.add_arguments(s)

    s = sub.add_parser("prepare", help="tokenize, build the vocabulary, split, and filter the embeddings")
    s.add_argument("--data", required=True, help="challenge CSV (.csv/.csv.gz) or course .jsonl.gz, local or s3://")
    s.add_argument("--embeddings", default="none", help="word vectors (.txt/.vec[.gz] or word2vec .bin), or 'none' to train them (default)")
    s.add_argument("--out", required=True, help="output prefix; writes <out>/prepared/<hash>/")
    s.add_argument("--embedding-dim", type=int, default=100, help="vector size when --embeddings none (default: 100)")
    s.add_argument("--allow-low-coverage", action="store_true",
                   help="use a vector file that covers under 10%% of the vocabulary (refused by default)")
    s.add_argument("--language", choices=("spanish", "portuguese"), default="spanish", help="stopword list (default: spanish)")
    s.add_argument("--seed", type=int, default=0, help="seed for splits and trained vectors (default: 0)")
    s.add_argument("--workers", type=int, default=None,
                   help="processes that read and tokenize; the output is the same for any number (default: the usable cores)")
    s.add_argument("--result-file", help="also write the prepared URI to this file (an Argo output parameter)")

    s = sub.add_parser("train", help="train one config on prepared data")
    s.add_argument("--config", required=True, help="one config spec, e.g. hidden100:lr=3e-4")
    s.add_argument("--prepared", required=True, help="prepared data URI (printed by prepare)")
    s.add_argument("--out", required=True, help="the run's folder, <out>/sweeps/<sweep>/<run>; reruns resume")
    s.add_argument("--sweep", required=True, help="the sweep id: groups the run's live metrics with its sweep's")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    s.add_argument("--result-file", help="also write the test balanced accuracy to this file")
    s.add_argument("--epochs", type=int, default=None,
                   help="train to this epoch, continuing from the checkpoint (default: the config's epochs)")
    s.add_argument("--round", type=int, default=None, help="the search round that trains the run (its MLflow tag)")
    s.add_argument("--rung", type=int, default=None, help="the halving rung that trains the run (its MLflow tag)")
    s.add_argument("--cuda-graphs", default="false",
                   help="true: on CUDA, capture each batch shape's training step as a CUDA graph and replay it "
                        "(job/graphs.py); false: every step eager (default: false)")

    s = sub.add_parser("train-group", help="train several runs at once in one pod, one train process each, sharing its GPU")
    s.add_argument("--runs", required=True, help="the pod's runs: a JSON list of {name, spec, epochs, round, rung}")
    s.add_argument("--prepared", required=True, help="prepared data URI (printed by prepare)")
    s.add_argument("--out", required=True, help="the output prefix: each run writes <out>/sweeps/<sweep>/<run>")
    s.add_argument("--sweep", required=True, help="the sweep id")
    s.add_argument("--cuda-graphs", default="false", help="true or false, as train takes it (default: false)")
    s.add_argument("--result-file", help="also write each run's test balanced accuracy here, a JSON object")

    s = sub.add_parser("aggregate", help="plots and summary of a sweep, under <out>/sweeps/<sweep>/report/")
    s.add_argument("--out", required=True, help="the sweep's output prefix, local or s3://")
    s.add_argument("--sweep", required=True, help="the sweep id: its runs are under <out>/sweeps/<sweep>/")
    s.add_argument("--configs", default="", help="the sweep's config specs; those with no output are reported missing")
    s.add_argument("--report-dir", help="also leave the report files in this local folder (Argo output artifacts)")
    s.add_argument("--baseline", default="true", help="true or false, as given to plan (default: true)")
    search.add_arguments(s)

    s = sub.add_parser("predict", help="classify titles with a finished run (e.g. a sweep's best/)")
    predict_arguments(s)

    s = sub.add_parser("sweep", help="prepare, train every config and aggregate, on this machine")
    s.add_argument("--configs", required=True, help="comma-separated config specs, e.g. hidden50,hidden100")
    s.add_argument("--data", required=True, help="challenge CSV or course jsonl.gz, local or s3://")
    s.add_argument("--embeddings", default="none", help="word vectors, or 'none' to train them (default)")
    s.add_argument("--out", required=True, help="output prefix, local or s3://")
    s.add_argument("--sweep", default=None, help="sweep id, names the folder (default: sweep-<time>)")
    s.add_argument("--parallel", type=int, default=1, help="configs trained at once (default: 1)")
    s.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="leave out the tfidf baseline run every sweep adds")
    s.add_argument("--cuda-graphs", default="false", help="true or false, as train takes it (default: false)")
    s.add_argument("--runs-per-gpu", type=int, default=1,
                   help="GPU runs trained at once as one process each (train-group), as on Argo (default: 1)")
    search.add_arguments(s)

    s = sub.add_parser("bench", help="seed-style loop vs this project's training path, side by side (--prepare: the prepare step)")
    s.add_argument("--rows", type=int, default=None, help="synthetic rows (default: sized for the device)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    s.add_argument("--family", default="lstm", choices=("lstm", "cnn", "mlp", "all"), help="model family (default: lstm)")
    s.add_argument("--epochs", type=int, default=None, help="epochs for both loops (default: sized for the device)")
    s.add_argument("--classes", type=int, default=None, help="classes (default: 632 on cuda; fewer on cpu, to learn in minutes)")
    s.add_argument("--repeats", type=int, default=None,
                   help="timed runs of each loop, interleaved; the median and min..max are over them (default: sized for the device)")
    s.add_argument("--seeds", type=int, default=None,
                   help="seeds whose mean validation balanced accuracy is judged, the spread beside it (default: sized for the device)")
    s.add_argument("--big-batch", action=argparse.BooleanOptionalAction, default=None,
                   help="also run ours at 4x the batch in each round (default: on cuda, not on cpu)")
    s.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="also run ours with each step captured as a CUDA graph (cuda only; default: on cuda)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on cpu; torch's own on cuda)")
    s.add_argument("--profile", action="store_true", help="also print the profiler's table of a few of ours' training steps")
    s.add_argument("--search", action="store_true",
                   help="bench successive halving against the full search instead: 27 trials twice (--rows, --trials)")
    s.add_argument("--trials", type=int, default=None, help="with --search: trials of the space (default: 27)")
    s.add_argument("--tfidf", action="store_true",
                   help="bench the tfidf baseline's fit instead: time and peak memory at --rows (default 1 M) synthetic rows")
    s.add_argument("--prepare", action="store_true",
                   help="bench the prepare step instead: each phase at 1 M and 4 M rows (--rows: one size), 1 and 2 workers")
    s.add_argument("--share", default=None, metavar="K,K,...",
                   help="bench K training processes on one device at once instead, e.g. 1,2,4,8 (runs_per_gpu)")
    return p


def main(argv: list[str] | None = None, on_batch=None) -> int:
    """Run one step. on_batch: the training loop's per-batch callback (train.OnBatch), for train only."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("gensim", "botocore", "boto3", "s3transfer", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_cli(lambda: _step(args, on_batch))


def _step(args, on_batch=None) -> int:
    """Every step's main returns its exit code."""
    if args.step == "synth":
        from job import synth

        return synth.main(args)
    if args.step in ("plan", "next"):
        from job import fanout

        return fanout.plan_main(args) if args.step == "plan" else fanout.next_main(args)
    if args.step == "prepare":
        from job import prepare

        return prepare.main(args)
    if args.step == "train":
        from job import train

        return train.main(args, on_batch)
    if args.step == "train-group":
        from job import train_group

        return train_group.main(args)
    if args.step == "aggregate":
        from job import aggregate

        return aggregate.main(args)
    if args.step == "predict":
        from job import predict

        return predict.main(args)
    if args.step == "sweep":
        from job import local

        return local.main(args)
    if args.search:
        from job import bench_search

        return bench_search.main(args)

    if args.tfidf:
        from job import tfidf_bench

        return tfidf_bench.main(args)
    if args.prepare:
        from job import prepare_bench

        return prepare_bench.main(args)
    if args.share:
        from job import share_bench

        return share_bench.main(args)
    from job import bench

    return bench.main(args)

if __name__ == "__main__":
    sys.exit(main())

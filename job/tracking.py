"""MLflow tracking: one MLflow run per sweep run, in one MLflow experiment per sweep.

Turned on by MLFLOW_TRACKING_URI (e.g. http://mlflow.ml:5000); without it nothing here runs and
`mlflow` is never imported. The client is the package's optional `tracking` extra (mlflow-skinny).
Credentials are MLflow's own variables, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or
MLFLOW_TRACKING_TOKEN (on Argo, from a Secret of their own); they are never logged.

Grouping: the sweep id names an MLflow experiment. Each train run is an MLflow run in it, named
after the run and tagged meli.sweep and meli.run; aggregate logs the report files to the sweep's
own run, named `report` (tag meli.kind=report). One experiment per sweep, because the runs of a
sweep are what the MLflow UI compares side by side, and the experiment needs no parent run that
parallel train pods would race to create.

What a train run logs:
  params     the config's values, spec, sweep, prepared (the URI) and prepared_hash
  metrics    train_loss, validation_loss, validation_balanced_accuracy per epoch (step = epoch);
             test_loss, test_balanced_accuracy at the end
  tags       meli.sweep, meli.run, meli.kind=train, and meli.rung / meli.round when the run has one
  artifact   model.pt

Safe to resume: a resumed or retried run finds its MLflow run again by its tags and continues it.
Epochs are logged from the run's history (the checkpoint's), and only the (metric, step) pairs the
server does not hold yet, so an epoch that was logged before a kill is not logged again, and one
that was checkpointed but not logged is logged on the next attempt.

A tracking server that is down or slow never fails or stalls training: every call runs on one
background thread, MLflow's HTTP retries are bounded (the defaults below, unless the MLflow
variables are set), a failure logs one warning and the next epoch tries again, and the end of a
run waits at most MELI_MLFLOW_FINISH_WAIT seconds for its last logs.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from pathlib import Path

from job import runfiles, storage
from job.errors import UserError

log = logging.getLogger("job.tracking")

URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: set, tracking is on
FINISH_WAIT_ENV = "MELI_MLFLOW_FINISH_WAIT"
FINISH_WAIT_S = 60.0  # the end of a run waits at most this long for its last logs (model.pt upload included)
# MLflow's client settings, used unless the variables are set: one request gives up after about
# 3 tries of 10 s and 1 + 2 s of backoff, not MLflow's defaults (7 retries of 120 s each); a
# training pod sends MLflow no usage telemetry.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # seconds, doubled on each retry
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow prints each finished run's link with the URI as given, credentials and all; ours leave them out
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
EPOCH_METRICS = ("train_loss", "validation_loss", "validation_balanced_accuracy")  # metrics.jsonl keys, per epoch
TEST_METRICS = ("test_loss", "test_balanced_accuracy")  # summary.json keys, logged once at the end
TAG_SWEEP, TAG_RUN, TAG_KIND = "meli.sweep", "meli.run", "meli.kind"
REPORT_RUN = "report"  # the sweep's own run, which holds the report files
BATCH = 900  # metrics per log_batch request (MLflow's limit is 1000)


def enabled() -> bool:
    return bool(os.environ.get(URI_ENV, "").strip())


def _finish_wait_s() -> float:
    raw = os.environ.get(FINISH_WAIT_ENV, "").strip()
    try:
        value = float(raw) if raw else FINISH_WAIT_S
    except ValueError:
        raise UserError(f"{FINISH_WAIT_ENV}={raw!r}: expected seconds, e.g. 60") from None
    if value < 0:
        raise UserError(f"{FINISH_WAIT_ENV}={raw!r}: must be 0 or more seconds")
    return value


def _client():
    """An MlflowClient for MLFLOW_TRACKING_URI, with bounded HTTP retries (see CLIENT_DEFAULTS)."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        from mlflow import MlflowClient  # imported here, on the tracking thread: it takes seconds
    except ImportError:
        raise RuntimeError("MLFLOW_TRACKING_URI is set but the MLflow client is not installed: "
                           "pip install 'meli-sweep[tracking]'") from None

    return MlflowClient(os.environ[URI_ENV].strip())


def _server() -> str:
    """The tracking URI without credentials: the only form ever logged."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(os.environ.get(URI_ENV, "").strip())
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _reason(error: BaseException) -> str:
    """The error's first line, with any credentials of the tracking URI (which MLflow's messages quote) masked."""
    from urllib.parse import urlsplit

    text = (str(error).splitlines() or [type(error).__name__])[0]
    parts = urlsplit(os.environ.get(URI_ENV, "").strip())
    for secret in (parts.password, os.environ.get("MLFLOW_TRACKING_PASSWORD"),
                   os.environ.get("MLFLOW_TRACKING_TOKEN")):
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


def experiment_id(client, sweep: str) -> str:
    """The sweep's experiment, created by whichever pod of the sweep gets there first."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(sweep)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(sweep, tags={TAG_SWEEP: sweep})
    except MlflowException as e:  # another pod created it between the two calls
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(sweep).experiment_id


def find_run(client, experiment: str, sweep: str, name: str, kind: str):
    """The newest MLflow run of this sweep run, or None."""
    runs = client.search_runs([experiment], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_RUN}` = "
                              f"'{name}' and tags.`{TAG_KIND}` = '{kind}'", order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0] if runs else None


def run_tags(args) -> dict[str, str]:
    """The rung or round of a train run, where there is one: its --rung / --round, else MELI_RUNG / MELI_ROUND."""
    tags = {}
    for name in ("rung", "round"):
        value = getattr(args, name, None)
        if value in (None, ""):
            value = os.environ.get(f"MELI_{name.upper()}", "").strip()
        if value not in (None, ""):
            tags[name] = str(value)
    return tags


class Tracker:
    """The MLflow run of one train run. Built by `from_env`; does nothing when MLFLOW_TRACKING_URI is unset.

    Train calls `epochs(history)` after each checkpoint, and `finish(summary)` at the end (summary None:
    the run failed). Both hand their work to one background thread and return at once.
    """

    def __init__(self, sweep: str, name: str, params: dict[str, str], tags: dict[str, str], out: str,
                 finish_wait_s: float = FINISH_WAIT_S, trained: bool = False, enabled: bool = True) -> None:
        self.sweep, self.name, self.params, self.tags, self.out = sweep, name, params, tags, out
        self.finish_wait_s = finish_wait_s
        self.trained = trained  # the run finished training in an earlier attempt: only its MLflow run is completed
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._was_finished = False  # the MLflow run found was FINISHED already: its end time stays
        self._logged: set[tuple[str, int]] = set()  # (metric, step) pairs the server holds
        self._history: list[dict] = []  # the latest history handed over
        self._final: dict | None = None  # {"summary": ...} once finish was called
        self._warned = False
        self._cond = threading.Condition()
        self._pending = True  # attach at once: the run shows in the UI while its first epoch trains
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(target=self._work, name="mlflow", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self._thread is not None

    @classmethod
    def from_env(cls, sweep: str, run, out: str, prepared: str, tags: dict[str, str] | None = None,
                 trained: bool = False) -> "Tracker":
        """The tracker of a train run; a no-op one when MLFLOW_TRACKING_URI is unset. run: a configs.Run; tags:
        extra ones, e.g. {"rung": "2"} (empty values left out); trained: its summary.json says it finished."""
        if not enabled():
            return cls(sweep, run.name, {}, {}, out, enabled=False)
        params = {**{k: _text(v) for k, v in run.config.to_dict().items()}, "spec": run.spec, "sweep": sweep,
                  "prepared": prepared, "prepared_hash": prepared.rstrip("/").rsplit("/", 1)[-1]}
        all_tags = {TAG_SWEEP: sweep, TAG_RUN: run.name, TAG_KIND: "train",
                    **{f"meli.{k}": str(v) for k, v in (tags or {}).items() if v not in (None, "")}}
        tracker = cls(sweep, run.name, params, all_tags, out, _finish_wait_s(), trained)
        log.info("tracking %s in MLflow at %s (experiment %s)", run.name, _server(), sweep)
        return tracker

    def epochs(self, history: list[dict]) -> None:
        """Log every epoch of history the server does not hold yet (history: the checkpoint's, one dict an epoch)."""
        if not self.enabled:
            return
        with self._cond:
            self._history = [dict(h) for h in history]
            self._pending = True
            self._cond.notify()

    def finish(self, summary: dict | None) -> None:
        """The last epochs, the test figures and model.pt (with a summary), the run's status; waits at most
        finish_wait_s for them. Reads the epochs from metrics.jsonl, so it also completes a run an earlier
        attempt finished training but could not log."""
        if not self.enabled:
            return
        with self._cond:
            self._final = {"summary": summary}
            self._pending = True
            self._cond.notify()
        self._thread.join(self.finish_wait_s)
        if self._thread.is_alive():
            log.warning("MLflow %s: %s's last logs did not finish within %g s (%s); the step ends without them",
                        _server(), self.name, self.finish_wait_s, FINISH_WAIT_ENV)

    # --- the background thread ------------------------------------------------------

    def _work(self) -> None:
        client = None
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                self._pending = False
                history, final = list(self._history), self._final
            try:
                client = client or _client()
                if self.run_id is None:
                    self._attach(client)
                if final is not None:
                    self._log_final(client, final["summary"])
                    return
                self._log_epochs(client, history)
            except Exception as e:  # tracking is the server's problem, never training's
                self._warn(e)
                if final is not None:
                    return

    def _warn(self, error: BaseException) -> None:
        if not self._warned:
            log.warning("MLflow %s: tracking %s failed (%s); training goes on, the next epoch tries again and later "
                        "failures are not logged", _server(), self.name, _reason(error))
            self._warned = True
        else:
            log.debug("MLflow %s: tracking %s failed (%s)", _server(), self.name, _reason(error))

    def _attach(self, client) -> None:
        """Find this run's MLflow run (a resume or retry) or create it; learn what it already holds."""
        from mlflow.entities import Param, RunStatus, RunTag

        experiment = experiment_id(client, self.sweep)
        found = find_run(client, experiment, self.sweep, self.name, "train")
        # A training attempt never continues a FINISHED MLflow run: summary.json is written before the MLflow
        # run is finished, so a run that still trains is another one of the same sweep id (a local sweep id
        # used again on new output). Completing a run that finished training takes the newest one.
        if found is not None and (self.trained or found.info.status != "FINISHED"):
            run_id = found.info.run_id
            for key in EPOCH_METRICS:
                self._logged |= {(key, m.step) for m in client.get_metric_history(run_id, key)}
            self._logged |= {(key, 0) for key in TEST_METRICS if key in found.data.metrics}
            held, self._was_finished = found.data.params, found.info.status == "FINISHED"
            if found.info.status != "RUNNING" and not self.trained:
                client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            log.info("MLflow: %s continues run %s (%d epochs logged)", self.name, run_id,
                     len({s for k, s in self._logged if k == EPOCH_METRICS[0]}))
        else:
            run_id, held = client.create_run(experiment, run_name=self.name, tags=self.tags).info.run_id, {}
        params = [Param(k, v) for k, v in self.params.items() if k not in held]
        client.log_batch(run_id, params=params, tags=[RunTag(k, v) for k, v in self.tags.items()])
        self.run_id, self.experiment_id = run_id, experiment  # last: a failure above attaches again on the next
        # try (and finds the run it created)

    def _log_epochs(self, client, history: list[dict]) -> None:
        from mlflow.entities import Metric

        new = [(key, int(h["epoch"]), float(h[key])) for h in history for key in EPOCH_METRICS
               if key in h and (key, int(h["epoch"])) not in self._logged]
        now = _millis()
        for i in range(0, len(new), BATCH):
            chunk = new[i:i + BATCH]
            client.log_batch(self.run_id, metrics=[Metric(k, _finite(v), now, step) for k, step, v in chunk])
            self._logged |= {(k, step) for k, step, _ in chunk}

    def _log_final(self, client, summary: dict | None) -> None:
        from mlflow.entities import Metric, RunStatus

        self._log_epochs(client, runfiles.read_history(self.out))
        if summary is not None and summary.get("status") == "ok":
            tests = [Metric(k, _finite(float(summary[k])), _millis(), 0) for k in TEST_METRICS
                     if k in summary and (k, 0) not in self._logged]
            if tests:
                client.log_batch(self.run_id, metrics=tests)
                self._logged |= {(m.key, 0) for m in tests}
            if not any(f.path == runfiles.MODEL for f in client.list_artifacts(self.run_id)):
                with tempfile.TemporaryDirectory(prefix="meli-mlflow-") as tmp:
                    local = Path(tmp, runfiles.MODEL)
                    local.write_bytes(storage.read_bytes(storage.join(self.out, runfiles.MODEL)))
                    client.log_artifact(self.run_id, str(local))
            status = RunStatus.FINISHED
        else:
            status = RunStatus.FAILED
        if not (self._was_finished and status == RunStatus.FINISHED):
            client.set_terminated(self.run_id, status=RunStatus.to_string(status))
        log.info("MLflow: %s logged (%s): %s", self.name, RunStatus.to_string(status).lower(),
                 run_link(self.experiment_id, self.run_id))


def log_report(sweep: str, report_files: dict[str, bytes], best: str | None) -> None:
    """aggregate: the report files into the sweep's own run (`report`), finished; waits at most
    MELI_MLFLOW_FINISH_WAIT seconds, and a failure is one warning. No-op when tracking is off."""
    if not enabled():
        return
    wait_s, outcome = _finish_wait_s(), {}

    def work() -> None:
        from mlflow.entities import RunStatus, RunTag

        client = _client()
        experiment = experiment_id(client, sweep)
        found = find_run(client, experiment, sweep, REPORT_RUN, "report")
        run_id = found.info.run_id if found else client.create_run(
            experiment, run_name=REPORT_RUN, tags={TAG_SWEEP: sweep, TAG_RUN: REPORT_RUN, TAG_KIND: "report"}).info.run_id
        if best:
            client.log_batch(run_id, tags=[RunTag("meli.best", best)])
        with tempfile.TemporaryDirectory(prefix="meli-mlflow-") as tmp:
            folder = Path(tmp, "report")
            folder.mkdir()
            for name, blob in report_files.items():
                (folder / name).write_bytes(blob)
            client.log_artifacts(run_id, str(folder), artifact_path="report")  # a new report replaces the old files
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))
        outcome["run"] = run_link(experiment, run_id)

    def guarded() -> None:
        try:
            work()
        except Exception as e:  # the report is already written; tracking never fails the step
            outcome["error"] = e

    thread = threading.Thread(target=guarded, name="mlflow-report", daemon=True)
    thread.start()
    thread.join(wait_s)
    if "run" in outcome:
        log.info("MLflow: report of sweep %s logged: %s", sweep, outcome["run"])
    else:
        reason = _reason(outcome["error"]) if "error" in outcome else f"no answer within {wait_s:g} s"
        log.warning("MLflow %s: could not log the report of sweep %s (%s); the report is in its folder", _server(), sweep,
                    reason)


def run_link(experiment_id: str | None, run_id: str) -> str:
    """The UI page of an MLflow run, on the tracking server without credentials."""
    return f"{_server()}/#/experiments/{experiment_id}/runs/{run_id}"


def _millis() -> int:
    import time

    return int(time.time() * 1000)


def _finite(value: float) -> float:
    """MLflow stores NaN, but the server's JSON does not carry infinities: a diverged loss is logged as NaN."""
    return value if math.isfinite(value) else math.nan


def _text(value) -> str:
    """A param's value as MLflow shows it (params are strings, at most 6000 characters)."""
    return (value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value))[:6000]

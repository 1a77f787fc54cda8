"""Training metrics pushed to a Prometheus Pushgateway, so Grafana shows every config's training live.

Train pods end between two scrapes, so train pushes instead of being scraped. Each run pushes to
its own group, job="meli_train" plus the grouping key {sweep, config}; those three are the labels
of every series (Prometheus keeps them with `honor_labels: true`). The series, their types and
meanings are defined once, in METRICS below.

Turned on by PUSHGATEWAY_URL (`http://host:9091`, may carry `user:password@`); PUSHGATEWAY_INTERVAL
sets the seconds between throttled pushes. Pushes run on a background thread with a short timeout,
so a slow or unreachable Pushgateway never fails or slows training: one warning, then training goes on.
When the sweep is done, aggregate calls `delete_sweep` (after the last pushes had time to be
scraped); the history stays in Prometheus and the final numbers live in the sweep's report.

Only this run's values are pushed: a dedicated registry, no process or default-registry metrics.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import time
import urllib.request
from typing import Callable, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import (basic_auth_handler, default_handler, delete_from_gateway, generate_latest,
                                         pushadd_to_gateway)

from job.errors import UserError

log = logging.getLogger("job.pushgateway")

JOB = "meli_train"  # the Pushgateway `job` label of every training group
PUSH_TIMEOUT_S = 2.0  # one push gives up after this; only the final flush ever waits for it
DEFAULT_INTERVAL_S = 5.0  # at most one progress push per this many seconds (epoch ends and the end always push)
DEFAULT_DELETE_AFTER_S = 60.0  # delete a group only once its last push is this old: 2 scrapes at the common 30 s

# name: (type, help). The help strings never change: the Pushgateway rejects a name whose metadata differs between groups.
METRICS: dict[str, tuple[str, str]] = {
    "meli_train_loss": ("gauge", "Training loss (cross-entropy, nats), mean over the recent batches."),
    "meli_train_samples_total": ("counter", "Training samples processed."),
    "meli_train_samples_per_second": ("gauge", "Recent training throughput, samples per second."),
    "meli_train_samples_per_epoch": ("gauge", "Training samples in one epoch."),
    "meli_train_epoch": ("gauge", "Epoch in progress."),
    "meli_train_epochs_planned": ("gauge", "Epochs the config asks for."),
    "meli_train_validation_loss": ("gauge", "Validation loss (cross-entropy, nats) after the last finished epoch."),
    "meli_train_validation_balanced_accuracy": ("gauge", "Validation balanced accuracy (0-1) after the last finished epoch."),
    "meli_train_test_balanced_accuracy": ("gauge", "Test balanced accuracy (0-1) of the final model."),
    "meli_train_gpu_memory_bytes": ("gauge", "CUDA memory held by tensors, bytes; 0 when training on CPU."),
    "meli_train_last_success_timestamp_seconds": ("gauge", "Unix time at which the run last finished successfully."),
}


class _Values:
    """The run's latest values, rendered as metric families at push time; unset ones are left out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the training thread writes, the push thread reads
        self._values: dict[str, float] = {}

    def set(self, **values: float) -> None:
        with self._lock:
            for short, value in values.items():
                self._values[f"meli_train_{short}"] = float(value)

    def get(self, short: str) -> float | None:
        with self._lock:
            return self._values.get(f"meli_train_{short}")

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = dict(self._values)
        for name, (kind, doc) in METRICS.items():
            if name in values:
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, doc, value=values[name])


def _split_url(url: str) -> tuple[str, str | None, str | None]:
    """(URL without credentials, user, password): the clean URL is the only form ever logged."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return clean, user, password


def _handler(user: str | None, password: str | None) -> Callable:
    if user is None:
        return default_handler

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, user, password or "")

    return handler


def _reason(error: BaseException, password: str | None) -> str:
    text = str(getattr(error, "reason", None) or error) or type(error).__name__
    return text.replace(password, "***") if password else text


def _gpu_memory_bytes() -> float:
    """CUDA memory held by tensors; 0 without CUDA. Never imports torch nor starts a CUDA context."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0.0
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return float(torch.cuda.memory_allocated())
    except Exception:  # a broken driver must not stop training over a metric
        return 0.0
    return 0.0


class _Pusher:
    """One background thread that pushes the registry when asked; requests made while it pushes coalesce."""

    def __init__(self, gateway: str, grouping_key: dict[str, str], registry: CollectorRegistry,
                 handler: Callable, password: str | None, timeout_s: float) -> None:
        self._gateway, self._grouping_key, self._registry = gateway, grouping_key, registry
        self._handler, self._password, self._timeout_s = handler, password, timeout_s
        self._cond = threading.Condition()
        self._pending = False
        self._closing = False
        self.failing = False  # the last push failed
        self.warned = False  # the one warning has been logged
        self._thread = threading.Thread(target=self._run, name="metrics-push", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify()

    def close(self, wait_s: float) -> None:
        """Push what is pending, then stop; waits at most wait_s, so a hung gateway cannot hold up the exit."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(wait_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                self._pending = False
            self._push()

    def _push(self) -> None:
        try:
            pushadd_to_gateway(self._gateway, job=JOB, registry=self._registry, grouping_key=self._grouping_key,
                               timeout=self._timeout_s, handler=self._handler)
        except Exception as e:  # any failure of a metric push is the gateway's problem, never training's
            if not self.warned:
                log.warning("Pushgateway %s: push failed (%s); training goes on, later failures are not logged",
                            self._gateway, _reason(e, self._password))
                self.warned = True
            else:
                log.debug("Pushgateway %s: push failed (%s)", self._gateway, _reason(e, self._password))
            self.failing = True
        else:
            if self.failing:
                log.info("Pushgateway %s: pushes work again", self._gateway)
            self.failing = False


class TrainingMetrics:
    """The metrics of one training run. Built by `from_env`; does nothing when PUSHGATEWAY_URL is unset.

    Train calls start, then progress every few seconds, epoch_end after each validation, and finish.
    """

    def __init__(self, sweep: str, config: str, url: str | None, interval_s: float = DEFAULT_INTERVAL_S,
                 timeout_s: float = PUSH_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.sweep, self.config = sweep, config
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._clock = clock  # seconds, for throttling and throughput; tests pass a fake one
        self._values = _Values()
        self._last_push: float | None = None  # clock() of the last push request
        self._epoch_mark: tuple[float, int | None] | None = None  # (clock(), samples_total) at the last epoch end
        self._pusher: _Pusher | None = None
        self.url: str | None = None  # without credentials; None when disabled
        if url:
            self.url, user, password = _split_url(url)
            registry = CollectorRegistry(auto_describe=False)  # this run's values only
            registry.register(self._values)
            self._pusher = _Pusher(self.url, {"sweep": sweep, "config": config}, registry,
                                   _handler(user, password), password, timeout_s)
            log.info("pushing training metrics to %s (group sweep=%s config=%s, at most every %g s)",
                     self.url, sweep, config, interval_s)

    @classmethod
    def from_env(cls, sweep: str, config: str) -> "TrainingMetrics":
        url = os.environ.get("PUSHGATEWAY_URL", "").strip()
        raw = os.environ.get("PUSHGATEWAY_INTERVAL", "").strip()
        try:
            interval_s = float(raw) if raw else DEFAULT_INTERVAL_S
        except ValueError:
            raise UserError(f"PUSHGATEWAY_INTERVAL={raw!r}: expected seconds, e.g. 5") from None
        if interval_s < 0:
            raise UserError(f"PUSHGATEWAY_INTERVAL={raw!r}: must be 0 or more seconds")
        return cls(sweep, config, url or None, interval_s)

    @property
    def enabled(self) -> bool:
        return self._pusher is not None

    def start(self, epochs_total: int, samples_per_epoch: int) -> None:
        if not self.enabled:
            return
        self._epoch_mark = (self._clock(), None)  # the samples done before a resume are unknown here
        self._values.set(epochs_planned=epochs_total, samples_per_epoch=samples_per_epoch,
                         gpu_memory_bytes=_gpu_memory_bytes())
        self._push(force=True)

    def progress(self, epoch: int, samples_total: int, train_loss: float, samples_per_second: float) -> None:
        """Called often from the training loop; pushes at most once per interval."""
        if not self.enabled:
            return
        self._values.set(epoch=epoch, samples_total=self._samples(samples_total), loss=train_loss,
                         samples_per_second=samples_per_second, gpu_memory_bytes=_gpu_memory_bytes())
        self._push(force=False)

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, val_balanced_accuracy: float,
                  samples_total: int, samples_per_second: float | None = None) -> None:
        """After each validation; always pushes.

        samples_per_second: the epoch's training throughput. Without it, the samples since the last
        epoch end over the wall time since then (validation included), so short epochs that never
        reached a progress call still show a throughput.
        """
        if not self.enabled:
            return
        now = self._clock()
        if samples_per_second is None and self._epoch_mark is not None:
            mark_time, mark_samples = self._epoch_mark
            seen = samples_total - mark_samples if mark_samples is not None else self._values.get("samples_per_epoch")
            if seen and seen > 0 and now > mark_time:
                samples_per_second = seen / (now - mark_time)
        self._epoch_mark = (now, samples_total)
        values: dict[str, float] = {"epoch": epoch, "samples_total": self._samples(samples_total), "loss": train_loss,
                                    "validation_loss": val_loss, "validation_balanced_accuracy": val_balanced_accuracy,
                                    "gpu_memory_bytes": _gpu_memory_bytes()}
        if samples_per_second is not None:
            values["samples_per_second"] = samples_per_second
        self._values.set(**values)
        self._push(force=True)

    def finish(self, test_balanced_accuracy: float | None, ok: bool) -> None:
        """The final push; waits for it at most the push timeout, then stops the push thread."""
        if not self.enabled:
            return
        values: dict[str, float] = {"gpu_memory_bytes": _gpu_memory_bytes()}
        if test_balanced_accuracy is not None:
            values["test_balanced_accuracy"] = test_balanced_accuracy
        if ok:
            values["last_success_timestamp_seconds"] = time.time()
        self._values.set(**values)
        self._push(force=True)
        assert self._pusher is not None
        self._pusher.close(self.timeout_s)
        self._pusher = None

    def _samples(self, samples_total: int) -> float:
        # A counter never goes down within a run; a smaller number (a caller's slip) keeps the old value.
        previous = self._values.get("samples_total")
        return max(float(samples_total), previous or 0.0)

    def _push(self, force: bool) -> None:
        now = self._clock()
        if force or self._last_push is None or now - self._last_push >= self.interval_s:
            self._last_push = now
            assert self._pusher is not None
            self._pusher.request()


def _groups_of(gateway: str, user: str | None, password: str | None, sweep: str, timeout_s: float) -> dict[str, float]:
    """{config: Unix time of its last push} of the sweep's groups on the gateway (its JSON API, Pushgateway >= 1.0)."""
    request = urllib.request.Request(f"{gateway}/api/v1/metrics")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        groups = json.load(response).get("data", [])
    found = {}
    for group in groups:
        labels = group.get("labels", {})
        if labels.get("job") == JOB and labels.get("sweep") == sweep and "config" in labels:
            pushed = group.get("push_time_seconds", {}).get("metrics", [{}])[0].get("value", "0")
            found[labels["config"]] = float(pushed)
    return found


def delete_sweep(sweep: str, configs: list[str]) -> None:
    """Delete the sweep's groups from the Pushgateway named by PUSHGATEWAY_URL (no-op when unset).

    Deletes the given configs and any other group of the sweep the gateway holds. The gateway never
    forgets a group by itself; Prometheus keeps the history. A push younger than PUSHGATEWAY_DELETE_AFTER
    seconds (default 60) may not be scraped yet, so this first waits until the newest is that old:
    the final values reach Prometheus. Warns once and returns if the gateway is unreachable.
    """
    url = os.environ.get("PUSHGATEWAY_URL", "").strip()
    if not url:
        return
    raw = os.environ.get("PUSHGATEWAY_DELETE_AFTER", "").strip()
    try:
        delete_after_s = max(0.0, float(raw)) if raw else DEFAULT_DELETE_AFTER_S
    except ValueError:
        raise UserError(f"PUSHGATEWAY_DELETE_AFTER={raw!r}: expected seconds, e.g. 60") from None
    gateway, user, password = _split_url(url)
    handler = _handler(user, password)
    try:
        pushed = _groups_of(gateway, user, password, sweep, PUSH_TIMEOUT_S)
        # The gateway's clock against ours: a skew of a few seconds only shifts the wait, never beyond delete_after_s.
        wait_s = min(delete_after_s, delete_after_s - (time.time() - max(pushed.values(), default=0.0)))
        if wait_s > 0:
            log.info("Pushgateway %s: waiting %.0f s so Prometheus scrapes the last pushes of sweep %s before they are deleted",
                     gateway, wait_s, sweep)
            time.sleep(wait_s)
        names = set(configs) | set(pushed)
        for config in sorted(names):
            delete_from_gateway(gateway, job=JOB, grouping_key={"sweep": sweep, "config": config},
                                timeout=PUSH_TIMEOUT_S, handler=handler)
    except Exception as e:  # cleanup is best effort: the report is already written
        log.warning("Pushgateway %s: could not delete the groups of sweep %s (%s); delete them by hand with "
                    "DELETE %s/metrics/job/%s/sweep/%s/config/<config>",
                    gateway, sweep, _reason(e, password), gateway, JOB, sweep)
        return
    log.info("Pushgateway %s: deleted %d group(s) of sweep %s", gateway, len(names), sweep)


def gpu_memory_sample() -> str:
    """meli_train_gpu_memory_bytes now, as its line of the text a push would carry (the GPU bench prints it)."""
    values = _Values()
    values.set(gpu_memory_bytes=_gpu_memory_bytes())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(values)
    text = generate_latest(registry).decode()
    return next(line for line in text.splitlines() if line.startswith("meli_train_gpu_memory_bytes "))

"""Pytest fixture and helpers: Debian's Prometheus and Pushgateway on free loopback ports.

`prom` starts both once per session through `workflows.observe.serve` (the same code as `make observe`):
Prometheus scrapes the Pushgateway every second with `honor_labels: true`. The binaries come from
Debian's `prometheus` and `prometheus-pushgateway`; `make test` and `.ci/run` install them when
missing. If they are still missing the tests fail: server-backed tests are never skipped.

    from promservers import prom, query   # in a test module
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from workflows import observe
from job.errors import UserError

SCRAPE_INTERVAL_S = 1.0  # short, so a test sees a push within about a second


@pytest.fixture(scope="session")
def prom(tmp_path_factory) -> observe.Servers:
    try:
        observe.binaries()
    except UserError as e:
        pytest.fail(f"{e}\n`make test` installs them when run as root; the metrics tests need both.", pytrace=False)
    with observe.serve(tmp_path_factory.mktemp("prometheus"), scrape_interval_s=SCRAPE_INTERVAL_S) as servers:
        yield servers


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def query(prom_url: str, expr: str) -> list[dict]:
    """Evaluate an instant PromQL query through the HTTP API; a syntax or evaluation error fails."""
    try:
        body = _get(f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    except urllib.error.HTTPError as e:
        raise AssertionError(f"Prometheus rejected {expr!r}: {e.read().decode(errors='replace')}") from None
    assert body["status"] == "success", body
    return body["data"]["result"]


def label_values(prom_url: str, label: str, match: str) -> list[str]:
    """What Grafana's label_values(match, label) returns: the label's values among the matching series."""
    body = _get(f"{prom_url}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match}))
    assert body["status"] == "success", body
    return body["data"]


def wait_for(prom_url: str, expr: str, timeout_s: float = 20.0) -> list[dict]:
    """Poll until the query returns at least one series (the scrape after a push)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = query(prom_url, expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def pushgateway_groups(pushgateway_url: str) -> list[dict[str, str]]:
    """The grouping labels of every group the Pushgateway holds (its JSON API)."""
    return [g["labels"] for g in _get(f"{pushgateway_url}/api/v1/metrics")["data"]]


def push_time(pushgateway_url: str, **labels: str) -> float | None:
    """The Unix time of the last push to the group with these labels, as the Pushgateway recorded it; None if absent."""
    for group in _get(f"{pushgateway_url}/api/v1/metrics")["data"]:
        if all(group["labels"].get(k) == v for k, v in labels.items()):
            return float(group["push_time_seconds"]["metrics"][0]["value"])
    return None


def pushgateway_pushes(pushgateway_url: str) -> int:
    """Successful POST pushes the Pushgateway has served, from its own metrics."""
    with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^pushgateway_http_requests_total\{code="200",handler="push",method="post"\} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else 0

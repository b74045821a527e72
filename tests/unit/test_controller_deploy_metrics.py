"""The controller's deploy metrics that Grafana annotations read (docs/analytics.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from deployctl.controller.metrics import ControllerMetrics
from deployctl.reconcile.reconciler import FAILED, IN_SYNC, SUCCEEDED, Outcome
from deployctl.rules.plan import Action
from tests.fixtures.auditdata import sha

T1 = datetime(2024, 11, 23, 9, 30, tzinfo=UTC)
T2 = datetime(2024, 11, 24, 10, 0, tzinfo=UTC)


def samples(metrics: ControllerMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def outcome(app: str, result: str, new_sha: str, finished: datetime) -> Outcome:
    return Outcome("production", app, next(iter(Action)), result, new_sha=new_sha, finished_at=finished)


def test_last_deploy_per_app_is_one_series_labelled_with_its_sha() -> None:
    metrics = ControllerMetrics(clock=lambda: 0.0)
    metrics.observe_reconcile([outcome("web", SUCCEEDED, sha("1"), T1)], seconds=1, trigger="watch", exit_code=0)
    metrics.observe_reconcile(
        [outcome("web", SUCCEEDED, sha("2"), T2), outcome("api", FAILED, sha("3"), T2),
         outcome("search", IN_SYNC, sha("4"), T2)],
        seconds=1, trigger="watch", exit_code=1,
    )  # fmt: skip
    stamps = samples(metrics, "deployctl_deploy_timestamp_seconds")
    assert stamps == {(("app", "web"), ("env", "production"), ("sha", sha("2"))): T2.timestamp()}
    results = samples(metrics, "deployctl_deploys_total")
    assert results[(("app", "web"), ("env", "production"), ("result", "succeeded"))] == 2
    assert results[(("app", "api"), ("env", "production"), ("result", "failed"))] == 1
    assert not any(dict(k)["app"] == "search" for k in results)  # in sync: no deploy

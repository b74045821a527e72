"""The app locks' edge over a scripted API: the races between two runs taking one app's lock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deployctl.edges.kube.locks import AppLock, LeaseLocks, LockHolder, lock_name
from deployctl.errors import kube_error


class Scripted:
    """Answers each request with the next scripted answer (an exception is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.calls.append(method)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Api:
    def __init__(self, transport: Scripted) -> None:
        self.transport = transport


def lease(holder: str | None, version: str = "7") -> dict[str, Any]:
    return {"metadata": {"name": "deployctl-lock-api", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "renewTime": "2026-12-03T10:00:00.000000Z",
                     "leaseDurationSeconds": 15, "leaseTransitions": 2}}


def test_a_lock_released_between_our_create_and_our_read_is_tried_again_not_an_error() -> None:
    api = Scripted(kube_error("exists", status=409), kube_error("gone", status=404))
    answer = LeaseLocks(lambda _c: Api(api)).try_take(None, "ns", "api", identity="ci", lease=15)  # type: ignore[arg-type,return-value]
    assert isinstance(answer, LockHolder) and answer.identity is None
    assert api.calls == ["POST", "GET"]


def test_a_lock_held_by_another_run_names_it_and_our_own_timed_out_create_is_ours() -> None:
    held = Scripted(kube_error("exists", status=409), lease("ci-job-4710"))
    answer = LeaseLocks(lambda _c: Api(held)).try_take(None, "ns", "api", identity="ci", lease=15)  # type: ignore[arg-type,return-value]
    assert isinstance(answer, LockHolder) and answer.identity == "ci-job-4710"
    ours = Scripted(kube_error("exists", status=409), lease("ci"), lease("ci", "8"))
    taken = LeaseLocks(lambda _c: Api(ours)).try_take(None, "ns", "api", identity="ci", lease=15)  # type: ignore[arg-type,return-value]
    assert isinstance(taken, AppLock) and taken.held()
    assert ours.calls == ["POST", "GET", "PUT"]
    taken.released = True  # no renewal thread work left behind


def test_an_app_name_that_cannot_be_a_lease_name_is_hashed() -> None:
    assert lock_name("api") == "deployctl-lock-api"
    assert lock_name("Api_v2").startswith("deployctl-lock-h-") and len(lock_name("x" * 300)) < 64


def test_an_open_attempts_holder_is_gone_from_its_lock_only_once_its_lease_is_stale_by_two_durations() -> None:
    stale = Scripted(kube_error("exists", status=409), lease("killed-run"), lease("ci", "8"))
    taken = LeaseLocks(lambda _c: Api(stale)).take_if_gone(  # type: ignore[arg-type,return-value]
        None, "ns", "api", holder="killed-run", identity="ci", lease=15)
    assert isinstance(taken, AppLock) and stale.calls == ["POST", "GET", "PUT"]  # renewed 2026-12-03T10:00
    taken.released = True
    fresh = lease("live-run")
    fresh["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    alive = LeaseLocks(lambda _c: Api(Scripted(kube_error("exists", status=409), fresh))).take_if_gone(  # type: ignore[arg-type,return-value]
        None, "ns", "api", holder="live-run", identity="ci", lease=15)
    assert isinstance(alive, LockHolder) and alive.identity == "live-run"
    other = LeaseLocks(lambda _c: Api(Scripted(kube_error("exists", status=409), lease("other-run")))).take_if_gone(  # type: ignore[arg-type,return-value]
        None, "ns", "api", holder="killed-run", identity="ci", lease=15)
    assert isinstance(other, LockHolder) and other.identity == "other-run"  # not taken: the caller closes it

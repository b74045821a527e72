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


class _Stop(Exception):
    pass


def test_a_renewal_round_slower_than_its_period_is_followed_at_once_so_no_lock_lapses(monkeypatch: Any) -> None:
    """A run waiting for a thousand rollouts holds a thousand locks: on a loaded API server one round of
    renewals can take longer than a third of the lease. The next round must not wait a whole period more."""
    import threading
    import time
    from types import SimpleNamespace

    from deployctl.edges.kube import locks as locks_module

    clock = SimpleNamespace(now=100.0, sleeps=0)
    ours = threading.current_thread()  # the renewer of other tests' locks may still run: real time for them

    def monotonic() -> float:
        return clock.now if threading.current_thread() is ours or threading.current_thread().name.startswith(
            "deployctl-lock-renew") else time.monotonic()

    def sleep(seconds: float) -> None:
        if threading.current_thread() is not ours:
            time.sleep(seconds)
            return
        if clock.sleeps == 4:
            raise _Stop
        clock.sleeps += 1
        clock.now += seconds

    monkeypatch.setattr(locks_module, "time", SimpleNamespace(monotonic=monotonic, sleep=sleep))
    renewals: list[tuple[float, bool]] = []  # (when each renewal started, whether the lock was still held then)

    class Slow:
        def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
            assert method == "PUT"
            renewals.append((clock.now, taken.held()))
            clock.now += 6.0  # one round takes 6 s; the period is 5 s (a 15 s lease)
            return lease("ci", str(len(renewals) + 7))

    owner = LeaseLocks(lambda _c: Api(Slow()))  # type: ignore[arg-type,return-value]
    taken = AppLock(owner, Api(Slow()), "ns", "deployctl-lock-api", lease("ci"), valid_until=100.0 + 10.0)  # type: ignore[arg-type]
    owner._held.append(taken)
    owner._lease = 15.0
    try:
        owner._renew()
    except _Stop:
        pass
    starts = [at for at, _ in renewals]
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [6.0, 6.0, 6.0]
    assert all(held for _, held in renewals)
    assert taken.held()

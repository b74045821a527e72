"""One error root: every exception class deployctl defines is a DeployctlError, unless it is a signal that
never leaves the module that raises it (converted there into a DeployctlError, a Problem or an answer)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import deployctl
from deployctl.errors import (
    DeployctlError,
    KubeApiError,
    KubeClientError,
    KubeConflictError,
    KubeForbiddenError,
    KubeGoneError,
    KubeNotFoundError,
    KubeServerError,
    KubeTimeoutError,
    kube_error,
)
from deployctl.model.vocabulary import ExitCode

# module:class -> where it is converted before a user could see it
EDGE_SIGNALS = {
    "deployctl.model.config.strict_yaml:Rejected": "model.config.load turns it into a Problem",
    "deployctl.model.duration:DurationError": "a ValueError for click's Duration type and the config loaders",
    "deployctl.edges.http:HttpError": "edges.registry.client and edges.notify convert it",
    "deployctl.edges.http:DeadlineExceeded": "an HttpError",
    "deployctl.edges.http:ResponseTooLarge": "an HttpError",
    "deployctl.edges.http:RedirectRefused": "an HttpError",
    "deployctl.edges.events.kafka:PublishError": "edges.notify records it as a failed delivery",
    "deployctl.edges.notify:DeliveryError": "edges.notify records it as a failed delivery",
    "deployctl.edges.kube.informer:_Gone": "the informer re-lists",
    "deployctl.edges.kube.informer:_TooNew": "the informer watches again",
    "deployctl.edges.kube.transport:NeedsClientLoader": "the transport falls back to the client's loader",
    "deployctl.controller.webhook:MalformedHook": "answered 400",
    "deployctl.controller.forward:ForwardError": "answered by the webhook server",
    "deployctl.controller.httpserver:BodyTimeout": "answered 408",
    "deployctl.controller.loop:Stopped": "the loop ends the run as stopped",
    "deployctl.cli:CliError": "click's own exception, made from a DeployctlError in one place",
}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(deployctl.__path__, "deployctl."):
        if ".devtools." in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}:{name}"] = obj
    return found


def test_every_exception_is_a_deployctl_error_or_a_named_edge_signal() -> None:
    outside = {key for key, cls in _exception_classes().items() if not issubclass(cls, DeployctlError)}
    assert outside == set(EDGE_SIGNALS)


def test_no_error_class_picks_its_exit_code_with_a_number() -> None:
    for key, cls in _exception_classes().items():
        if issubclass(cls, DeployctlError):
            assert isinstance(cls.exit_code, ExitCode), key


@pytest.mark.parametrize(("status", "kind", "transient"), [
    (403, KubeForbiddenError, False),
    (404, KubeNotFoundError, False),
    (409, KubeConflictError, True),
    (410, KubeGoneError, True),
    (422, KubeClientError, False),
    (500, KubeServerError, True),
    (504, KubeTimeoutError, True),
    (None, KubeApiError, False),
])
def test_a_kubernetes_answer_becomes_the_error_of_its_status(status, kind, transient) -> None:
    error = kube_error("get deployment shop/web: refused", status=status)
    assert type(error) is kind
    assert error.status == status
    assert error.transient is transient
    assert error.exit_code == ExitCode.FAILED

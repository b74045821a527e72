"""The deployctl error hierarchy: every error a user can see is a :class:`DeployctlError`.

Like kopf's ``clients/errors.py``: one root, a class per Kubernetes API status, and a ``transient`` flag
(trying again later may succeed) against terminal errors. Edges convert what their library raises into
these, chained ``from`` the original; signals that never leave an edge (a watch's 410, a redirect refused
inside the HTTP transport) stay private to it. The CLI maps the root to ``Error: ...`` and ``exit_code``
in one place (`deployctl.cli`); no other module picks an exit code for an error.
"""

from __future__ import annotations

from deployctl.model.vocabulary import ExitCode


class DeployctlError(Exception):
    """Base of every error deployctl reports to a user."""

    exit_code: ExitCode = ExitCode.FAILED
    transient: bool = False  # True: the same request may succeed later (a timeout, a 5xx, a lost connection)


class InvalidInputError(DeployctlError):
    """A deploy file, config or other untrusted input is invalid."""

    exit_code = ExitCode.INVALID


class LockLostError(DeployctlError):
    """A run stopped renewing an app's lock in time: another run may write that app now."""


class ClusterUnreachableError(DeployctlError):
    """The Kubernetes API cannot be reached."""

    exit_code = ExitCode.UNREACHABLE
    transient = True


class LocalClusterError(DeployctlError):
    """The local control plane cannot be built, started or stopped."""


# -- the Kubernetes API, by status ---------------------------------------------------------------


class KubeApiError(DeployctlError):
    """The API server refused a request (``status``: its HTTP status, None when it sent no usable answer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeClientError(KubeApiError):
    """A 4xx: the request itself is wrong for the server; the same request will fail again."""


class KubeForbiddenError(KubeClientError):
    """403: the credentials may not do this (RBAC)."""


class KubeNotFoundError(KubeClientError):
    """404: the object (or its namespace) does not exist."""


class KubeConflictError(KubeClientError):
    """409: the object changed or exists already; read it again and retry."""

    transient = True


class KubeGoneError(KubeClientError):
    """410: the resourceVersion is too old to watch from; list again."""

    transient = True


class KubeServerError(KubeApiError):
    """A 5xx: the server failed; the same request may succeed later."""

    transient = True


class KubeTimeoutError(KubeServerError):
    """504: the server gave up waiting (e.g. its watch cache has not caught up with a resourceVersion)."""


_BY_STATUS: dict[int, type[KubeApiError]] = {
    403: KubeForbiddenError, 404: KubeNotFoundError, 409: KubeConflictError, 410: KubeGoneError,
    504: KubeTimeoutError,
}


def kube_error(message: str, *, status: int | None = None) -> KubeApiError:
    """The error for an API server's answer with ``status``: its own class when it has one, else by family."""
    if status is None:
        return KubeApiError(message)
    kind = _BY_STATUS.get(status) or (KubeServerError if status >= 500 else
                                      KubeClientError if status >= 400 else KubeApiError)
    return kind(message, status=status)


class PreDeployError(DeployctlError):
    """An app's pre-deploy Job is invalid, failed or did not complete in time: its rollout does not start."""

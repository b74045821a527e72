"""The deployctl error hierarchy. Every error a user can see is one of these.

The CLI maps them to a message and an exit code in one place (`deployctl.cli`).
"""

from __future__ import annotations

from deployctl.model.vocabulary import ExitCode


class DeployctlError(Exception):
    """Base of every error deployctl reports to a user."""

    exit_code: int = ExitCode.FAILED


class InvalidInputError(DeployctlError):
    """A deploy file, config or other untrusted input is invalid."""

    exit_code = ExitCode.INVALID


class ClusterUnreachableError(DeployctlError):
    """The Kubernetes API cannot be reached."""

    exit_code = ExitCode.UNREACHABLE


class LocalClusterError(DeployctlError):
    """The local control plane cannot be built, started or stopped."""

    exit_code = ExitCode.FAILED

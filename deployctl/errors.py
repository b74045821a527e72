"""The deployctl error hierarchy. Every error a user can see is one of these.

The CLI maps them to a message and an exit code in one place (`deployctl.cli`).
"""

from __future__ import annotations


class DeployctlError(Exception):
    """Base of every error deployctl reports to a user."""

    exit_code = 1


class InvalidInputError(DeployctlError):
    """A deploy file, config or other untrusted input is invalid."""

    exit_code = 2


class ClusterUnreachableError(DeployctlError):
    """The Kubernetes API cannot be reached."""

    exit_code = 3


class LocalClusterError(DeployctlError):
    """The local control plane cannot be built, started or stopped."""

    exit_code = 1

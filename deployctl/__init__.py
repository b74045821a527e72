"""deployctl: deploy by code.

A deploy repo holds ``environments/<env>/<app>.deploy`` files whose first token is the
commit SHA to run. deployctl reads them at a git ref, maps each SHA to its immutable image,
applies it to the labelled Kubernetes workloads, waits for the rollout and records every attempt.

Layers (checked by import-linter, see ``.importlinter``):
``cli -> reconcile/controller -> edges (repo, cluster, audit, notify, registry) -> core model``.
"""

__version__ = "0.1.0"

"""One subpackage per outside system (Kubernetes, git, the registry, the audit store, notification sinks). An edge turns the outside world into model values and back, and nothing else."""

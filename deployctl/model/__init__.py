"""Values only: the config model, desired state, workloads, image references and audit records. No I/O, no clock, no network."""

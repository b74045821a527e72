"""The OCI registry edge: resolving tags to digests with per-host credentials."""

"""Development tooling (local control plane, demo). The runtime layers never import it."""

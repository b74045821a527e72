"""Use cases shared by the CLI and the controller (reconcile once, diff, promote, rollback)."""

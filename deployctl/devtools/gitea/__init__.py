"""A real Gitea for the tests and for trying forge approvals: built from Go modules, cached, run headless."""

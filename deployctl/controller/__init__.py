"""The long-running controller: the watch loop, leader election, the webhook server and metrics."""

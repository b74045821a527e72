"""One reconcile run: observe, plan, apply, wait, pin digests, apply policy and record outcomes."""

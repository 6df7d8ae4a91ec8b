"""Central retention: verify, check, prune and compact each repository from the controller with
its own full-access key; find tampering first, and roll it back."""

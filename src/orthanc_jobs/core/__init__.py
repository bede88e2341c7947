"""The service's core: the cluster's job registry and what keeps it true (polls, look-ups, liveness,
history), with no knowledge of HTTP routes."""

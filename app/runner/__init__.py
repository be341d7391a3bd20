"""Stage execution: subprocess supervision, the control loop, heartbeats, workers."""

"""What every long-running part of shilian uses to survive faults without a storm: jittered,
capped reconnect backoff and at-most-one-log-line-per-window limits. Pure, no I/O; knows no side
(edge and central both use it)."""

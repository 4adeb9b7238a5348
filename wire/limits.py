"""Bounds of the contract. Both sides check them: a sender refuses to send, a receiver refuses
to parse (before allocating for it)."""

#: Major version of the payload schema, carried as ``"v"`` in every payload and as ``v1`` in the
#: topic root. Additive changes (new optional fields) keep it; anything else bumps it.
PROTOCOL_VERSION = 1

#: Root of every topic. The version is in the topic so that a v2 fleet can share a broker.
TOPIC_ROOT = "shilian/v1"

#: Largest payload either side sends or accepts. Health and events are a few hundred bytes; 64 KiB
#: leaves room for a command's result (a config dump) while keeping a bad peer from making
#: central allocate megabytes per message. mosquitto's own cap is set higher (message_size_limit).
MAX_PAYLOAD_BYTES = 64 * 1024

#: Default and bounds of the health interval a node announces. Central declares a node offline
#: after 1.5 x the announced interval without health.
DEFAULT_HEALTH_INTERVAL_S = 30.0
MIN_HEALTH_INTERVAL_S = 1.0
MAX_HEALTH_INTERVAL_S = 3600.0

#: Factor applied to the announced health interval before a silent node is declared offline.
HEALTH_GRACE_FACTOR = 1.5

#: The node's reconnect backoff (resilience/backoff.py defaults to these): the first retry window is
#: ``RECONNECT_BASE_S``, each failure doubles it up to ``RECONNECT_CAP_S``, and the delay is drawn
#: uniformly inside the window (full jitter), so the cap is also the longest a node ever waits
#: between two attempts. A broker restart takes ~0.1 s, so most nodes are back within a second;
#: a node is never more than a minute from retrying.
RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 60.0

#: Longest a node waits for the broker's answer to one step (CONNACK, the birth's PUBACK, a
#: SUBACK) before it gives the attempt up as failed (edge/mqtt_link.py uses it).
NODE_OPERATION_TIMEOUT_S = 10.0


def reconnect_window_s(
    cap_s: float = RECONNECT_CAP_S, operation_timeout_s: float = NODE_OPERATION_TIMEOUT_S
) -> float:
    """The longest a live node can take, once the broker is back, to have its new birth at the
    broker: an attempt already under way when the broker returned may still fail one operation
    timeout later (its SYN or CONNECT was lost to the outage), then the longest jittered wait
    (the cap), then a connect whose CONNACK and birth come within one more operation timeout."""
    return operation_timeout_s + cap_s + operation_timeout_s


#: How long central holds a node at its last known state after central's connection to the broker
#: comes up, unless the node's own birth, will or clean stop is seen first (docs/central.md): the
#: nodes' whole reconnect window, so a broker outage of any length never shows a live node
#: offline. 80 s with the constants above.
RECONNECT_GRACE_S = reconnect_window_s()

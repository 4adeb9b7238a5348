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

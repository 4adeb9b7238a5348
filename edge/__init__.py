"""The village node agent (issue 3 §3): durable outbox, MQTT session, health, local API.

Heavy modules are imported lazily by ``edge.cli`` so an idle node stays small.
"""

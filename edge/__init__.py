"""The village node agent: durable outbox, MQTT session, health, local API.

Heavy modules are imported lazily by ``edge.cli`` so an idle node stays small.
"""

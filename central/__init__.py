"""Central aggregator of shilian (视联): ingests every node's MQTT messages, tracks node state,
computes coverage against the official village registry and serves an HTTP API and Prometheus
metrics. See docs/central.md."""

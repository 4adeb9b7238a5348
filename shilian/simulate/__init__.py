"""``shilian simulate``: a fleet of real MQTT 5 connections speaking the wire contract, driven
from a registry selection through a scenario that states what central must show, and checked
against central's API (docs/scale.md)."""

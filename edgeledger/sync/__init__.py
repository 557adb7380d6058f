"""Sync between gateways and the aggregator over MQTT (DESIGN.md 3), sans I/O.

`topics` names the MQTT topics, `messages` encodes and strictly decodes their
payloads, and `device` is the device side as a state machine: events in, actions
out. An MQTT client only carries the bytes.
"""

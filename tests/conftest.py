"""Fixtures every test directory may use: a real Mosquitto broker (tests/mosquitto.py)."""

from mosquitto import mosquitto, mosquitto_factory, mosquitto_session

__all__ = ["mosquitto", "mosquitto_factory", "mosquitto_session"]

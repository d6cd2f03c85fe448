"""F1 Cortex backfill: a kopf operator and an embedding worker for a fleet of yachts."""

__version__ = "0.1.0"

"""Measuring instruments: latency, memory, fidelity, environment, profiles."""

"""Kafka consumers: a generic runtime and the projections it applies messages with."""

"""Tests of the consumer runtime, the projections and their upsert builder."""

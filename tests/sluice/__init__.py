"""Tests of the platform: settings, metrics, tracing, the HTTP server, JSON, queries,
resilience, errors and logs."""

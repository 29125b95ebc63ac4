"""Webhook ingest: verify, store the event and its outbox row in one transaction, answer."""

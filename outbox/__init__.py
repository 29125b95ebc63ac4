"""The transactional outbox: rows written with the change they announce, then published."""

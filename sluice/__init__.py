"""sluice's platform: settings, errors, database, logging, metrics, tracing, resilience, auth,
health, migrations and the HTTP server every web component runs on; below every pipeline stage."""

"""sluice: provider webhooks in, your Postgres kept in step."""

"""Tests of the webhook endpoints and the Airtable fetch."""

"""The Square subscription the tests sign deliveries for."""

from __future__ import annotations

SIGNATURE_KEY = "test-signature-key-1"
ROTATED_KEY = "test-signature-key-2"
WEBHOOK_URL = "https://sluice.example.com/webhooks/square"

"""Which configured key verified a delivery, told without the key itself.

Kept with each stored event and each repeat (`signature_key`), so an operator rotating a key can
see which deliveries still arrive signed with the old one. A fingerprint is the label the key has
in the settings (its position in SQUARE_WEBHOOK_SIGNATURE_KEYS, counted from 1, or the Airtable
webhook id it is configured under), a colon, and the first hex digits of the SHA-256 of the value
as configured, so a key that moved or was replaced is told apart from the one it displaced:
`printf %s "$KEY" | sha256sum | cut -c1-6` gives them. Six hex digits are 24 bits of a hash of a
random key: enough to tell a handful of keys apart, nothing to recover one from.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import SecretStr

FINGERPRINT_HEX_DIGITS = 6


def key_fingerprint(label: str | int, secret: SecretStr) -> str:
    digest = hashlib.sha256(secret.get_secret_value().encode()).hexdigest()
    return f"{label}:{digest[:FINGERPRINT_HEX_DIGITS]}"

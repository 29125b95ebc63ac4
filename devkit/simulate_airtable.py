"""Signed Airtable pings, for `sluice simulate airtable` and the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any


def airtable_ping(
    base_id: str, webhook_id: str, timestamp: datetime | None = None
) -> dict[str, Any]:
    """A notification body exactly as Airtable sends it."""
    moment = (timestamp or datetime.now(UTC)).astimezone(UTC)
    return {
        "base": {"id": base_id},
        "webhook": {"id": webhook_id},
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def signed_airtable_ping(
    ping: dict[str, Any], mac_secret_base64: str
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(ping).encode()
    digest = hmac.new(base64.b64decode(mac_secret_base64), body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json; charset=utf-8",
        "x-airtable-content-mac": f"hmac-sha256={digest}",
    }
    return body, headers

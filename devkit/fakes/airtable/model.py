"""The fake Airtable's data: bases, tables, records and webhooks, and the payloads changes make.

Every change to records becomes one base transaction and one payload for each webhook watching
the table, exactly as Airtable reports them (`createdRecordsById`, `changedRecordsById` with only
the changed cells, `destroyedRecordIds`). Changes made through the Web API come back as
`actionMetadata.source = publicApi` by the token's user (`user_id`), changes made "in the UI" as
`client` by a colleague (`person_user_id`), so echo suppression can be tested against it.

It can also behave as Airtable's documentation says Airtable may: split one action over several
payloads that share its base transaction number, list an error payload and stop serving the
webhook, and report a deleted table in `destroyedTableIds`. Tests and `sluice dev` change the
data from Python here; devkit/fakes/airtable/http.py serves it in Airtable's wire format.
"""

from __future__ import annotations

import base64
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

WEBHOOK_LIFETIME = timedelta(days=7)
# Who changes are made as: the token's owner through the Web API, a colleague "in the UI".
API_USER_ID = "usrFAKEsluiceDev"
PERSON_USER_ID = "usrFAKEsalesTeam"
_ID_ALPHABET = string.ascii_letters + string.digits


def airtable_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


def airtable_time(value: datetime) -> str:
    """Airtable's timestamps: UTC, to the millisecond, with a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FakeField:
    id: str
    name: str
    type: str
    options: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type}
        if self.options is not None:
            data["options"] = self.options
        return data

    def payload_value(self, value: Any) -> Any:  # noqa: ANN401 - any cell value
        # Webhook payloads give select cells as choice objects, the records API as names.
        if self.type == "singleSelect" and isinstance(value, str) and self.options:
            for choice in self.options.get("choices", []):
                if choice["name"] == value:
                    return dict(choice)
            return {"id": airtable_id("sel"), "name": value, "color": "grayLight2"}
        return value


@dataclass
class FakeRecord:
    id: str
    created_time: datetime
    cells: dict[str, Any]  # by field id, records-API format
    modified_time: datetime | None = None  # LAST_MODIFIED_TIME(): created_time until a change

    def __post_init__(self) -> None:
        if self.modified_time is None:
            self.modified_time = self.created_time


@dataclass
class FakeTable:
    id: str
    name: str
    fields: list[FakeField]
    records: dict[str, FakeRecord] = field(default_factory=dict)
    view_id: str = field(default_factory=lambda: airtable_id("viw"))

    def field(self, id_or_name: str) -> FakeField:
        for candidate in self.fields:
            if id_or_name in (candidate.id, candidate.name):
                return candidate
        raise KeyError(id_or_name)

    def schema(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "primaryFieldId": self.fields[0].id,
            "fields": [f.schema() for f in self.fields],
            "views": [{"id": self.view_id, "name": "Grid view", "type": "grid"}],
        }

    def record_json(
        self, record: FakeRecord, *, by_id: bool, only: set[str] | None = None
    ) -> dict[str, Any]:
        fields = {}
        for field_id, value in record.cells.items():
            if value in (None, "", [], False):
                continue  # Airtable leaves empty cells out
            if only is not None and field_id not in only:
                continue
            fields[field_id if by_id else self.field(field_id).name] = value
        return {
            "id": record.id,
            "createdTime": airtable_time(record.created_time),
            "fields": fields,
        }


@dataclass
class FakeWebhook:
    id: str
    base_id: str
    mac_secret: bytes
    notification_url: str | None
    specification: dict[str, Any]
    expiration_time: datetime
    created_time: datetime
    notifications_enabled: bool = True
    # Airtable disables a webhook it can no longer serve, after an error payload says why.
    enabled: bool = True
    payloads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mac_secret_base64(self) -> str:
        return base64.b64encode(self.mac_secret).decode()

    def watches(self, table_id: str, change_type: str, source: str) -> bool:
        filters = self.specification.get("options", {}).get("filters", {})
        if "tableData" not in filters.get("dataTypes", []):
            return False
        scope = filters.get("recordChangeScope")
        if scope and scope != table_id:
            return False
        change_types = filters.get("changeTypes")
        if change_types and change_type not in change_types:
            return False
        sources = filters.get("fromSources")
        return not sources or source in sources

    def include_previous(self) -> bool:
        includes = self.specification.get("options", {}).get("includes") or {}
        return bool(includes.get("includePreviousCellValues"))

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "client",
            "isHookEnabled": self.enabled,
            "notificationUrl": self.notification_url,
            "cursorForNextPayload": len(self.payloads) + 1,
            "areNotificationsEnabled": self.notifications_enabled,
            "lastSuccessfulNotificationTime": None,
            "lastNotificationResult": None,
            "createdTime": airtable_time(self.created_time),
            "expirationTime": airtable_time(self.expiration_time),
            "specification": self.specification,
        }


@dataclass
class FakeBase:
    id: str
    name: str
    tables: dict[str, FakeTable] = field(default_factory=dict)
    webhooks: dict[str, FakeWebhook] = field(default_factory=dict)
    transaction_number: int = 0

    def table(self, id_or_name: str) -> FakeTable:
        for table in self.tables.values():
            if id_or_name in (table.id, table.name):
                return table
        raise KeyError(id_or_name)


@dataclass(frozen=True, slots=True)
class _Change:
    """One record change inside a base transaction, before it becomes payload JSON."""

    table: FakeTable
    record: FakeRecord
    kind: str  # add | update | remove
    changed: dict[str, Any]
    previous: dict[str, Any]


class AirtableModel:
    """Bases and what is in them, and the users changes are made as."""

    def __init__(
        self,
        *,
        user_id: str = API_USER_ID,
        person_user_id: str = PERSON_USER_ID,
    ) -> None:
        self.user_id = user_id  # the token's owner: Web API changes are made as this user
        self.person_user_id = person_user_id
        self.bases: dict[str, FakeBase] = {}

    def add_base(self, name: str = "Sales", base_id: str | None = None) -> FakeBase:
        base = FakeBase(id=base_id or airtable_id("app"), name=name)
        self.bases[base.id] = base
        return base

    def add_table(
        self,
        base_id: str,
        name: str,
        fields: list[tuple[str, str] | tuple[str, str, dict[str, Any]]],
        table_id: str | None = None,
    ) -> FakeTable:
        made = []
        for spec in fields:
            field_name, kind, *options = spec
            made.append(
                FakeField(airtable_id("fld"), field_name, kind, options[0] if options else None)
            )
        table = FakeTable(id=table_id or airtable_id("tbl"), name=name, fields=made)
        self.bases[base_id].tables[table.id] = table
        return table

    def create_records(
        self, base_id: str, table: str, rows: list[Mapping[str, Any]], *, source: str = "client"
    ) -> list[str]:
        base = self.bases[base_id]
        fake_table = base.table(table)
        changes = []
        for row in rows:
            cells = {fake_table.field(k).id: v for k, v in row.items()}
            record = FakeRecord(airtable_id("rec"), datetime.now(UTC), cells)
            fake_table.records[record.id] = record
            changes.append(_Change(fake_table, record, "add", cells, {}))
        self._commit(base, changes, source)
        return [c.record.id for c in changes]

    def update_records(
        self,
        base_id: str,
        table: str,
        updates: Mapping[str, Mapping[str, Any]],
        *,
        source: str = "client",
        split: int = 1,
    ) -> None:
        """Change cells; with `split`, the action's cells are spread over that many payloads
        sharing one base transaction number, as Airtable may do with one action."""
        base = self.bases[base_id]
        fake_table = base.table(table)
        changes = []
        for record_id, row in updates.items():
            record = fake_table.records[record_id]
            changed, previous = {}, {}
            for key, value in row.items():
                field_id = fake_table.field(key).id
                if record.cells.get(field_id) != value:
                    previous[field_id] = record.cells.get(field_id)
                    changed[field_id] = value
                    record.cells[field_id] = value
            if changed:
                record.modified_time = datetime.now(UTC)
                changes.append(_Change(fake_table, record, "update", changed, previous))
        self._commit(base, changes, source, split=split)

    def destroy_records(
        self, base_id: str, table: str, record_ids: list[str], *, source: str = "client"
    ) -> None:
        base = self.bases[base_id]
        fake_table = base.table(table)
        changes = [
            _Change(fake_table, fake_table.records.pop(rid), "remove", {}, {}) for rid in record_ids
        ]
        self._commit(base, changes, source)

    def destroy_table(self, base_id: str, table: str) -> str:
        """Delete a table: one payload listing it in `destroyedTableIds`."""
        base = self.bases[base_id]
        gone = base.tables.pop(base.table(table).id)
        base.transaction_number += 1
        for webhook in self._live_webhooks(base):
            if webhook.watches(gone.id, "remove", "client"):
                webhook.payloads.append(
                    {**self._payload_head(base, "client"), "destroyedTableIds": [gone.id]}
                )
        return gone.id

    def break_webhook(self, base_id: str, webhook_id: str, code: str = "INVALID_HOOK") -> None:
        """The webhook fails at Airtable: an error payload, then no more payloads."""
        base = self.bases[base_id]
        webhook = base.webhooks[webhook_id]
        webhook.payloads.append(
            {
                "timestamp": airtable_time(datetime.now(UTC)),
                "baseTransactionNumber": base.transaction_number,
                "payloadFormat": "v0",
                "error": True,
                "code": code,
            }
        )
        webhook.enabled = False

    def add_webhook(
        self, base_id: str, notification_url: str | None, specification: dict[str, Any]
    ) -> FakeWebhook:
        base = self.bases[base_id]
        now = datetime.now(UTC)
        webhook = FakeWebhook(
            id=airtable_id("ach"),
            base_id=base_id,
            mac_secret=secrets.token_bytes(32),
            notification_url=notification_url,
            specification=specification,
            expiration_time=now + WEBHOOK_LIFETIME,
            created_time=now,
        )
        base.webhooks[webhook.id] = webhook
        return webhook

    def _commit(
        self, base: FakeBase, changes: list[_Change], source: str, *, split: int = 1
    ) -> None:
        if not changes:
            return
        base.transaction_number += 1
        parts = _split(changes, split)
        for webhook in self._live_webhooks(base):
            for part in parts:
                tables: dict[str, dict[str, Any]] = {}
                for change in part:
                    if not webhook.watches(change.table.id, change.kind, source):
                        continue
                    entry = tables.setdefault(change.table.id, {})
                    _describe(entry, change, include_previous=webhook.include_previous())
                if tables:
                    webhook.payloads.append(
                        {**self._payload_head(base, source), "changedTablesById": tables}
                    )

    def _live_webhooks(self, base: FakeBase) -> list[FakeWebhook]:
        now = datetime.now(UTC)
        return [w for w in base.webhooks.values() if w.expiration_time > now and w.enabled]

    def _payload_head(self, base: FakeBase, source: str) -> dict[str, Any]:
        return {
            "timestamp": airtable_time(datetime.now(UTC)),
            "baseTransactionNumber": base.transaction_number,
            "actionMetadata": {"source": source, "sourceMetadata": {"user": self._actor(source)}},
            "payloadFormat": "v0",
        }

    def _actor(self, source: str) -> dict[str, str]:
        # Web API changes are the token owner's; changes "in the UI" are a colleague's.
        if source == "publicApi":
            return {
                "id": self.user_id,
                "email": "dev@example.com",
                "permissionLevel": "create",
                "name": "Dev User",
            }
        return {
            "id": self.person_user_id,
            "email": "sales@example.com",
            "permissionLevel": "edit",
            "name": "Sales Person",
        }


def _split(changes: list[_Change], parts: int) -> list[list[_Change]]:
    """One action's changes over `parts` payloads: each record's cells dealt out in turn."""
    if parts <= 1:
        return [changes]
    split: list[list[_Change]] = [[] for _ in range(parts)]
    for change in changes:
        cells = list(change.changed.items())
        for i in range(parts):
            share = dict(cells[i::parts])
            if share or (i == 0 and not cells):
                previous = {k: v for k, v in change.previous.items() if k in share}
                split[i].append(_Change(change.table, change.record, change.kind, share, previous))
    return [part for part in split if part]


def _describe(entry: dict[str, Any], change: _Change, *, include_previous: bool) -> None:
    table, record = change.table, change.record

    def cells(values: dict[str, Any]) -> dict[str, Any]:
        return {fid: table.field(fid).payload_value(v) for fid, v in values.items()}

    if change.kind == "add":
        entry.setdefault("createdRecordsById", {})[record.id] = {
            "createdTime": airtable_time(record.created_time),
            "cellValuesByFieldId": cells(change.changed),
        }
    elif change.kind == "update":
        described: dict[str, Any] = {"current": {"cellValuesByFieldId": cells(change.changed)}}
        if include_previous:
            described["previous"] = {"cellValuesByFieldId": cells(change.previous)}
        entry.setdefault("changedRecordsById", {})[record.id] = described
    else:
        entry.setdefault("destroyedRecordIds", []).append(record.id)

"""An example for every command's `--help`, kept in one table so a test can hold every command
to having one (tests/commands/test_help_examples.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

# By the command's path under `sluice`; each a line one can run as it stands.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "dev": ("sluice dev", "sluice dev --port 9000"),
    "serve": ("sluice serve --port 8000",),
    "migrate": ("sluice migrate",),
    "relay": ("sluice relay",),
    "consume": ("sluice consume jobs", "sluice consume leads --group-id sluice.leads"),
    "api": ("sluice api --port 8002",),
    "admin": ("sluice admin --port 8001",),
    "doctor": ("sluice doctor", "sluice doctor --timeout 5 --json"),
    "store upkeep": ("sluice store upkeep",),
    "pause": ('sluice pause consumer:jobs --reason "bad deploy, rolling back"',),
    "resume": ("sluice resume consumer:jobs",),
    "paused": ("sluice paused",),
    "simulate airtable": (
        "sluice simulate airtable create",
        'sluice simulate airtable update --record-id recXXXXXXXXXXXXXX --field "Status=Won"',
    ),
    "simulate square": (
        "sluice simulate square booking.created",
        "sluice simulate square booking.updated --entity-id bk1 --version 2 --lost",
    ),
    "schemas export": ("sluice schemas export", "sluice schemas export --check"),
    "airtable fake-api": ("sluice airtable fake-api --port 8010",),
    "airtable webhooks create": (
        "sluice airtable webhooks create appXXXXXXXXXXXXXX --url https://hooks.example.com/webhooks/airtable",
    ),
    "airtable webhooks list": ("sluice airtable webhooks list",),
    "airtable webhooks refresh": (
        "sluice airtable webhooks refresh --all",
        "sluice airtable webhooks refresh achXXXXXXXXXXXXXX",
    ),
    "airtable webhooks delete": ("sluice airtable webhooks delete achXXXXXXXXXXXXXX",),
    "square fake-api": ("sluice square fake-api --port 8020",),
    "topics ensure": ("sluice topics ensure --partitions 12",),
    "reconcile square": (
        "sluice reconcile square",
        "sluice reconcile square --ahead",
        "sluice reconcile square --from 2026-03-01 --to 2026-03-31 --since 2026-03-01",
    ),
    "reconcile airtable": (
        "sluice reconcile airtable --lookback-minutes 15",
        "sluice reconcile airtable --full",
    ),
    "replay kafka": (
        (
            "sluice replay kafka --topic square.bookings --group sluice.jobs "
            "--to-datetime 2026-03-01T00:00:00Z --dry-run"
        ),
    ),
    "replay store": (
        "sluice replay store --source square --since 2026-03-01 --dry-run",
        "sluice replay store --source square --entity booking:bk1",
    ),
    "dlq list": ("sluice dlq list", "sluice dlq list --all --limit 50"),
    "dlq redrive": ("sluice dlq redrive --id 42", "sluice dlq redrive --all"),
    "dlq discard": ('sluice dlq discard --id 42 --reason "test data"',),
}


def epilog(path: str) -> str:
    lines = EXAMPLES[path]
    return ("Example:" if len(lines) == 1 else "Examples:") + "".join(
        f"\n\n  {line}" for line in lines
    )


def attach_examples(app: typer.Typer, prefix: str = "") -> None:
    """Give every command under `app` its examples as the epilog of its `--help`."""
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        path = f"{prefix}{name}".strip()
        if path in EXAMPLES and not command.epilog:
            command.epilog = epilog(path)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            attach_examples(group.typer_instance, f"{prefix}{group.name} ")

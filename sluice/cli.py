"""The `sluice` command: one entry point for every component."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sluice.settings import Settings

if TYPE_CHECKING:
    import httpx

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
simulate_app = typer.Typer(no_args_is_help=True, help="Send realistic, signed test deliveries.")
schemas_app = typer.Typer(no_args_is_help=True, help="Data contracts.")
app.add_typer(simulate_app, name="simulate")
app.add_typer(schemas_app, name="schemas")

DEFAULT_STATE_DIR = Path(".sluice")


def _settings() -> Settings:
    from sluice.logging import configure_logging  # noqa: PLC0415 - keep `--help` fast

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="SLUICE_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="SLUICE_PORT")] = 8000,
) -> None:
    """Run the webhook ingest service."""
    import uvicorn  # noqa: PLC0415

    from ingest.app import create_app  # noqa: PLC0415

    settings = _settings()
    if not settings.square_verification_configured:
        typer.echo(
            "sluice: SQUARE_WEBHOOK_SIGNATURE_KEYS and SQUARE_WEBHOOK_URL must both be set; "
            "until they are, POST /webhooks/square refuses every request.",
            err=True,
        )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the newest."""
    from sluice.migrate import upgrade  # noqa: PLC0415

    upgrade(_settings().require_database_url())
    typer.echo("migrations applied")


@app.command()
def dev(
    state_dir: Annotated[Path, typer.Option(envvar="SLUICE_STATE_DIR")] = DEFAULT_STATE_DIR,
    port: Annotated[int, typer.Option(envvar="SLUICE_PORT")] = 8000,
    postgres_port: Annotated[int, typer.Option(envvar="SLUICE_DEV_POSTGRES_PORT")] = 15432,
    kafka_port: Annotated[int, typer.Option(envvar="SLUICE_DEV_KAFKA_PORT")] = 19092,
) -> None:
    """Run the whole pipeline locally, on embedded PostgreSQL and Kafka unless configured."""
    from sluice.dev import DevOptions, run_dev  # noqa: PLC0415

    settings = _settings()
    code = run_dev(settings, DevOptions(state_dir, port, postgres_port, kafka_port))
    raise typer.Exit(code)


@simulate_app.command("square")
def simulate_square(
    event_type: Annotated[str, typer.Argument(help="booking.created, booking.updated, ...")],
    url: Annotated[str | None, typer.Option(help="Target URL (default: the running dev)")] = None,
    key: Annotated[str | None, typer.Option(help="Signature key (default: the dev key)")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Send the same delivery N times")] = 1,
    entity_id: Annotated[str | None, typer.Option(help="Booking or customer id")] = None,
    version: Annotated[int, typer.Option(min=1)] = 1,
    state_dir: Annotated[Path, typer.Option(envvar="SLUICE_STATE_DIR")] = DEFAULT_STATE_DIR,
) -> None:
    """Post a realistic, signed Square event to a running sluice (like `stripe trigger`)."""
    import httpx  # noqa: PLC0415

    from sluice.dev import read_dev_info  # noqa: PLC0415
    from sluice.simulate import (  # noqa: PLC0415
        SQUARE_EVENT_TYPES,
        signed_square_delivery,
        square_event,
    )

    if event_type not in SQUARE_EVENT_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(SQUARE_EVENT_TYPES)}")
    info = read_dev_info(state_dir)
    target = url or info.get("square_webhook_url")
    signing_key = key or info.get("square_signature_key")
    if not target or not signing_key:
        raise typer.BadParameter("no running `sluice dev` found: pass --url and --key")
    event = square_event(event_type, entity_id=entity_id, version=version)
    body, headers = signed_square_delivery(event, key=signing_key, url=target)
    failed = False
    with httpx.Client(timeout=15) as client:
        for attempt in range(repeat):
            response = client.post(target, content=body, headers=headers)
            failed |= response.status_code >= 300
            typer.echo(
                json.dumps(
                    {
                        "attempt": attempt + 1,
                        "status": response.status_code,
                        "response": _json_or_text(response),
                    }
                )
            )
    if failed:
        raise typer.Exit(1)


def _json_or_text(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Directory for the JSON Schema files")] = Path(
        "schemas/json"
    ),
) -> None:
    """Write the JSON Schema of every topic's payload."""
    from schemas.export import export_schemas  # noqa: PLC0415

    for path in export_schemas(out):
        typer.echo(str(path))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

"""The `sluice` command: one entry point for every component."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from commands.airtable import airtable_app, simulate_airtable
from commands.context import begin_invocation, warn_at_start
from commands.context import settings as load_settings
from commands.doctor import doctor
from commands.errors import SluiceGroup
from commands.examples import attach_examples
from commands.recovery import register as register_recovery
from commands.square import simulate_square, square_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=SluiceGroup)


@app.callback()
def _invocation() -> None:
    begin_invocation()


simulate_app = typer.Typer(no_args_is_help=True, help="Send realistic, signed test deliveries.")
schemas_app = typer.Typer(no_args_is_help=True, help="Data contracts.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
store_app = typer.Typer(no_args_is_help=True, help="The event store's partitions and retention.")
app.add_typer(simulate_app, name="simulate")
app.add_typer(schemas_app, name="schemas")
app.add_typer(airtable_app, name="airtable")
simulate_app.command("airtable")(simulate_airtable)
simulate_app.command("square")(simulate_square)
app.add_typer(square_app, name="square")
app.add_typer(topics_app, name="topics")
app.add_typer(store_app, name="store")
register_recovery(app)
app.command("doctor")(doctor)

DEFAULT_STATE_DIR = Path(".sluice")


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="SLUICE_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="SLUICE_PORT")] = 8000,
    workers: Annotated[int, typer.Option(envvar="SLUICE_WORKERS", min=1)] = 1,
) -> None:
    """Run the webhook ingest service."""
    from ingest.app import create_app  # noqa: PLC0415
    from sluice.http_server import run_http_server  # noqa: PLC0415

    settings = load_settings()
    if not settings.square_verification_configured:
        warn_at_start(
            "serve.square_not_configured",
            "SQUARE_WEBHOOK_SIGNATURE_KEYS and SQUARE_WEBHOOK_URL must both be set; "
            "until they are, POST /webhooks/square refuses every request.",
        )
    if workers > 1:
        _share_metrics_between_workers()
    # With several workers each process builds its own app (and settings) from the environment.
    run_http_server(
        create_app(settings) if workers == 1 else "ingest.app:create_app",
        settings,
        host=host,
        port=port,
        workers=workers,
        graceful_shutdown_seconds=10,
    )


def _share_metrics_between_workers() -> None:
    """prometheus_client multiprocess mode: each worker writes its samples to files in one
    directory and /metrics (answered by any worker) adds them up. The variable must be set
    before the workers import prometheus_client; they inherit it from this process.
    """
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sluice-metrics-")


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the newest."""
    from sluice.migrate import upgrade  # noqa: PLC0415

    upgrade(load_settings().require_database_url())
    typer.echo("migrations applied")


@app.command()
def relay() -> None:
    """Publish the outbox to Kafka. Run as many as you like: they split the work."""
    import uvloop  # noqa: PLC0415

    from outbox.relay import RelayConfig, serve_relay  # noqa: PLC0415

    settings = load_settings()
    uvloop.run(serve_relay(RelayConfig.from_settings(settings), metrics_port=settings.metrics_port))


@app.command()
def consume(
    name: Annotated[
        str, typer.Argument(help="jobs, airtable-fetcher, leads or airtable-writeback")
    ],
    topic: Annotated[
        list[str] | None, typer.Option(help="Consume these topics instead of the defaults")
    ] = None,
    group_id: Annotated[
        str | None, typer.Option(help="Default: SLUICE_CONSUMER_GROUP_PREFIX + name")
    ] = None,
) -> None:
    """Run a consumer: apply Kafka messages to a projection; offsets commit after the database."""
    import uvloop  # noqa: PLC0415

    from consumers.registry import CONSUMERS  # noqa: PLC0415
    from consumers.service import serve_consumer  # noqa: PLC0415

    if name not in CONSUMERS:
        raise typer.BadParameter(f"choose one of {', '.join(CONSUMERS)}")
    settings = load_settings()
    code = uvloop.run(serve_consumer(settings, name, topics=topic or (), group_id=group_id))
    raise typer.Exit(code)


@topics_app.command("ensure")
def topics_ensure(
    partitions: Annotated[
        int | None, typer.Option(min=1, help="Default: SLUICE_TOPIC_PARTITIONS")
    ] = None,
    replication_factor: Annotated[
        int | None, typer.Option(min=1, help="Default: SLUICE_TOPIC_REPLICATION_FACTOR")
    ] = None,
) -> None:
    """Create every pipeline topic and its .dlq topic that does not exist yet."""
    import asyncio  # noqa: PLC0415

    from outbox.topics import ensure_topics, pipeline_topics  # noqa: PLC0415

    settings = load_settings()
    wanted = partitions or settings.topic_partitions
    results = asyncio.run(
        ensure_topics(
            settings.require_kafka(),
            pipeline_topics(),
            partitions=wanted,
            replication_factor=replication_factor or settings.topic_replication_factor,
        )
    )
    for topic in results:
        typer.echo(f"{topic.name}\t{topic.partitions} partitions\t{topic.outcome}")
    if any(topic.outcome == "partitions_differ" for topic in results):
        typer.echo(
            f"sluice: some topics exist with a partition count other than {wanted}", err=True
        )


@store_app.command("upkeep")
def store_upkeep() -> None:
    """Create the event store's weeks ahead, drop the weeks older than
    SLUICE_EVENT_RETENTION_DAYS and prune old dedupe keys, now (ingest does it hourly)."""
    import asyncio  # noqa: PLC0415

    from ingest.partitions import upkeep  # noqa: PLC0415
    from sluice.db import create_engine  # noqa: PLC0415

    settings = load_settings()

    async def run() -> None:
        engine = create_engine(settings.require_database_url(), pool_size=2)
        try:
            done = await upkeep(engine, settings.event_retention_days)
        finally:
            await engine.dispose()
        if done.skipped:
            typer.echo("another upkeep is running (an ingest process): nothing done")
            return
        typer.echo(f"created   {', '.join(done.created) or 'none'}")
        typer.echo(f"dropped   {', '.join(done.dropped) or 'none'}")
        typer.echo(f"moved     {done.moved_from_default} events out of the default partition")
        typer.echo(f"pruned    {done.keys_pruned} dedupe keys, {done.repeats_pruned} repeats")

    asyncio.run(run())


@app.command("api")
def api_command(
    host: Annotated[str, typer.Option(envvar="SLUICE_API_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="SLUICE_API_PORT")] = 8002,
) -> None:
    """Run the App API (jobs, leads, the change stream) for the staff app and the portal."""
    from api.app import create_api_app  # noqa: PLC0415
    from sluice.http_server import run_http_server  # noqa: PLC0415

    settings = load_settings()
    if settings.api_token is None:
        warn_at_start(
            "api.token_not_set", "SLUICE_API_TOKEN is not set; every API request gets 503."
        )
    run_http_server(
        create_api_app(settings), settings, host=host, port=port, graceful_shutdown_seconds=5
    )


@app.command()
def dev(
    state_dir: Annotated[Path, typer.Option(envvar="SLUICE_STATE_DIR")] = DEFAULT_STATE_DIR,
    port: Annotated[int, typer.Option(envvar="SLUICE_PORT")] = 8000,
    postgres_port: Annotated[int, typer.Option(envvar="SLUICE_DEV_POSTGRES_PORT")] = 15432,
    kafka_port: Annotated[int, typer.Option(envvar="SLUICE_DEV_KAFKA_PORT")] = 19092,
) -> None:
    """Run the whole pipeline locally, on embedded PostgreSQL and Kafka unless configured."""
    from devkit.dev import DevOptions, run_dev  # noqa: PLC0415

    # Not the settings of a `sluice dev` already running here: this one starts its own.
    settings = load_settings(beside_dev=False)
    code = run_dev(settings, DevOptions(state_dir, port, postgres_port, kafka_port))
    raise typer.Exit(code)


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Directory for the contract files")] = Path(
        "schemas/contracts"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the files are not current")
    ] = False,
) -> None:
    """Write the contracts: JSON Schema per topic payload, AsyncAPI 3, OpenAPI (HTTP)."""
    from commands.contracts import export_contracts, stale_contracts  # noqa: PLC0415

    if check:
        stale = stale_contracts(out)
        for name in stale:
            typer.echo(f"sluice: {out / name} is not what `sluice schemas export` makes", err=True)
        raise typer.Exit(1 if stale else 0)
    for path in export_contracts(out):
        typer.echo(str(path))


# Every command is registered above; each gets its `--help` example.
attach_examples(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

"""`sluice reconcile`, `sluice replay`, `sluice dlq` and `sluice admin`: putting things right.

Every command prints one JSON document on stdout (progress, if any, goes to stderr) and says
how it went in its exit code: 0 done, 1 done with errors, 75 another run holds the lock (try
again later), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from commands.context import settings as load_settings
from commands.context import warn_at_start

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from recovery.pause import PauseChange
    from sluice.settings import Settings

reconcile_app = typer.Typer(no_args_is_help=True, help="Backstop reconcile against a provider.")
replay_app = typer.Typer(no_args_is_help=True, help="Deliver events again, for recovery.")
dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, redrive and discard.")


def register(app: typer.Typer) -> None:
    app.add_typer(reconcile_app, name="reconcile")
    app.add_typer(replay_app, name="replay")
    app.add_typer(dlq_app, name="dlq")
    app.command("admin")(admin)
    app.command("pause")(pause_command)
    app.command("resume")(resume_command)
    app.command("paused")(paused_command)


def _emit(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, default=str))


R = TypeVar("R")


def _run(coroutine: Coroutine[Any, Any, R]) -> R:
    return asyncio.run(coroutine)


def parse_when(value: str, *, end: bool = False, name: str = "time") -> datetime:
    """`2025-01-31` (a whole UTC day: its start, or with `end` the next day's start) or an ISO
    8601 date-time with a zone: the forms, and meanings, of the admin trigger's from/to/since."""
    from sluice.query import ParameterError, instant  # noqa: PLC0415

    try:
        return instant(name, value, dates=True, end=end)
    except ParameterError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _reconcile(source: str, **options: Any) -> None:  # noqa: ANN401
    from recovery.run_metrics import RunMetrics  # noqa: PLC0415
    from recovery.runs import EXIT_ERRORS, EXIT_LOCKED, RunLockedError, reconcile  # noqa: PLC0415

    settings = load_settings()
    metrics = RunMetrics()  # the breaker's state during the run, then the summary
    try:
        summary = _run(
            reconcile(
                settings,
                source,  # type: ignore[arg-type]
                show_progress=True,
                breakers=metrics.breakers,
                **options,
            )
        )
    except RunLockedError as exc:
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(EXIT_LOCKED) from exc
    _emit(summary.as_json())
    _export_metrics(settings, summary, metrics)
    if not summary.ok:
        raise typer.Exit(EXIT_ERRORS)


def _export_metrics(settings: Settings, summary: Any, metrics: Any) -> None:  # noqa: ANN401 - a RunSummary and its RunMetrics
    from recovery.run_metrics import export_run  # noqa: PLC0415

    try:
        export_run(settings, summary, metrics)
    except OSError as exc:  # a Pushgateway that is down must not fail the run itself
        typer.echo(f"sluice: could not export metrics: {exc}", err=True)


@reconcile_app.command("square")
def reconcile_square(
    start: Annotated[
        str | None,
        typer.Option("--from", help="First day or time of bookings (default: yesterday)"),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day, or end time (default: tomorrow)")
    ] = None,
    ahead: Annotated[
        bool,
        typer.Option(
            "--ahead", help="Bookings up to SQUARE_RECONCILE_AHEAD_DAYS ahead (the nightly run)"
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Search events and customers from this day or time, not from the watermarks"
        ),
    ] = None,
) -> None:
    """Record the Square events the store misses (Events API), then synthetic events for the
    customers and bookings the projections miss or hold stale."""
    from recovery.runs import default_square_window  # noqa: PLC0415

    if ahead and (start or end):
        raise typer.BadParameter("give --ahead or --from/--to, not both")
    ahead_days = load_settings().square_reconcile_ahead_days if ahead else 1
    default_start, default_end = default_square_window(ahead_days=ahead_days)
    low = parse_when(start, name="--from") if start else default_start
    high = parse_when(end, end=True, name="--to") if end else default_end
    if low >= high:
        raise typer.BadParameter("--from must be before --to")
    _reconcile(
        "square",
        square_window=(low, high),
        square_since=parse_when(since, name="--since") if since else None,
    )


@reconcile_app.command("airtable")
def reconcile_airtable(
    lookback_minutes: Annotated[
        int | None, typer.Option(min=1, max=1440, help="Sweep records changed within (default 60)")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Sweep every record")] = False,
) -> None:
    """Drain the webhook payload backlog, then sweep the mapped tables."""
    from recovery.reconcile_airtable import AirtableOptions  # noqa: PLC0415

    if full and lookback_minutes is not None:
        raise typer.BadParameter("give --lookback-minutes or --full, not both")
    options = AirtableOptions(full=full)
    if lookback_minutes is not None:
        options = AirtableOptions(lookback_minutes=lookback_minutes)
    _reconcile("airtable", airtable=options)


@replay_app.command("kafka")
def replay_kafka(
    topic: Annotated[str, typer.Option(help="Topic whose offsets to move")],
    group: Annotated[str, typer.Option(help="Consumer group (its consumers must be stopped)")],
    to_datetime: Annotated[
        str | None, typer.Option(help="First message at or after this time")
    ] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest")] = False,
    shift: Annotated[int | None, typer.Option(help="Move by N (negative: back)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
) -> None:
    """Move a consumer group's committed offsets on a topic; refuses while the group is live."""
    from recovery.replay_kafka import (  # noqa: PLC0415
        GroupActiveError,
        Shift,
        Target,
        ToDatetime,
        ToEarliest,
        UnknownTopicError,
        reset_offsets,
    )
    from recovery.runs import EXIT_LOCKED  # noqa: PLC0415

    chosen = [to_datetime is not None, to_earliest, shift is not None]
    if sum(chosen) != 1:
        raise typer.BadParameter("choose exactly one of --to-datetime, --to-earliest, --shift")
    target: Target
    if to_datetime is not None:
        target = ToDatetime(parse_when(to_datetime))
    elif to_earliest:
        target = ToEarliest()
    else:
        target = Shift(shift or 0)
    settings = load_settings()
    try:
        moves = _run(reset_offsets(settings.require_kafka(), topic, group, target, dry_run=dry_run))
    except GroupActiveError as exc:
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(EXIT_LOCKED) from exc
    except UnknownTopicError as exc:
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(1) from exc
    _emit(
        {
            "topic": topic,
            "group": group,
            "dry_run": dry_run,
            "partitions": [m.as_json() for m in moves],
        }
    )


@replay_app.command("store")
def replay_store(
    source: Annotated[str, typer.Option(help="square or airtable")],
    since: Annotated[str | None, typer.Option(help="Received at or after (date or time)")] = None,
    until: Annotated[str | None, typer.Option(help="Received before (date or time)")] = None,
    entity: Annotated[str | None, typer.Option(help="TYPE:ID, e.g. booking:abc123")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
) -> None:
    """Re-enqueue stored events into the outbox (after a broker lost data)."""
    from recovery.progress import progress_bar  # noqa: PLC0415
    from recovery.replay_store import (  # noqa: PLC0415
        NoRebuilderError,
        StoreFilter,
        count_matching,
    )
    from recovery.replay_store import replay_store as replay  # noqa: PLC0415
    from recovery.runs import EXIT_LOCKED, RunLockedError  # noqa: PLC0415
    from sluice.db import create_engine  # noqa: PLC0415

    entity_type = entity_id = None
    if entity is not None:
        entity_type, sep, entity_id = entity.partition(":")
        if not sep or not entity_type or not entity_id:
            raise typer.BadParameter("--entity must be TYPE:ID")
    where = StoreFilter(
        source,
        since=parse_when(since) if since else None,
        until=parse_when(until, end=True) if until else None,
        entity_type=entity_type,
        entity_id=entity_id,
    )
    settings = load_settings()

    async def go() -> dict[str, Any]:
        engine = create_engine(settings.require_database_url(), pool_size=2)
        try:
            total = await count_matching(engine, where)
            with progress_bar("replaying", enabled=True, total=total) as progress:
                result = await replay(engine, where, dry_run=dry_run, progress=progress)
        finally:
            await engine.dispose()
        return {"source": source, "dry_run": dry_run, **result.as_json()}

    try:
        document = _run(go())
    except NoRebuilderError as exc:
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(1) from exc
    except RunLockedError as exc:
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(EXIT_LOCKED) from exc
    _emit(document)
    if document["errors"]:
        raise typer.Exit(1)


@dlq_app.command("list")
def dlq_list(
    include_redriven: Annotated[
        bool, typer.Option("--all", help="Also redriven and discarded ones")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """Dead letters, oldest first, one JSON object per line."""
    from recovery.dead_letters import list_dead_letters  # noqa: PLC0415

    rows = _with_engine(
        lambda engine: list_dead_letters(engine, pending_only=not include_redriven, limit=limit)
    )
    for row in rows:
        _emit(row.as_json())


@dlq_app.command("redrive")
def dlq_redrive(
    dead_letter_id: Annotated[int | None, typer.Option("--id", help="One dead letter")] = None,
    redrive_all: Annotated[bool, typer.Option("--all", help="Every one not yet redriven")] = False,
) -> None:
    """Put dead letters back on their original topic (through the outbox) and mark them."""
    from recovery.audit import command_line_actor  # noqa: PLC0415
    from recovery.dead_letters import redrive  # noqa: PLC0415

    chosen = _one_or_all(dead_letter_id, redrive_all)
    document = _with_engine(
        lambda engine: redrive(engine, chosen, actor=command_line_actor())
    ).as_json()
    _emit(document)
    if document["errors"] or (dead_letter_id is not None and not document["redriven"]):
        raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(
    reason: Annotated[str, typer.Option("--reason", help="Why: kept with it and audited")],
    dead_letter_id: Annotated[int | None, typer.Option("--id", help="One dead letter")] = None,
    discard_all: Annotated[bool, typer.Option("--all", help="Every pending one")] = False,
) -> None:
    """Mark dead letters discarded, with a reason: nothing is put back on a topic."""
    from recovery.audit import command_line_actor  # noqa: PLC0415
    from recovery.dead_letters import discard  # noqa: PLC0415

    chosen = _one_or_all(dead_letter_id, discard_all)
    if not reason.strip():
        raise typer.BadParameter("give a reason", param_hint="--reason")
    document = _with_engine(
        lambda engine: discard(engine, chosen, reason=reason, actor=command_line_actor())
    ).as_json()
    _emit(document)
    if dead_letter_id is not None and not document["discarded"]:
        typer.echo(f"sluice: dead letter {dead_letter_id} is not pending", err=True)
        raise typer.Exit(1)


def _one_or_all(dead_letter_id: int | None, every: bool) -> int | None:
    if (dead_letter_id is None) == (not every):
        raise typer.BadParameter("choose exactly one of --id and --all")
    return dead_letter_id


def _with_engine(work: Callable[[AsyncEngine], Awaitable[R]]) -> R:
    """Run `work` on an engine for this invocation's database, then dispose of it."""
    from sluice.db import create_engine  # noqa: PLC0415

    settings = load_settings()

    async def go() -> R:
        engine = create_engine(settings.require_database_url(), pool_size=1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return _run(go())


def pause_command(
    component: Annotated[str, typer.Argument(help="relay, or consumer:<name> (consumer:jobs)")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why: kept and audited")] = None,
) -> None:
    """Pause a consumer group or the relay on every replica, within seconds, until resumed.
    Webhooks are still accepted and stored."""
    from recovery.audit import command_line_actor  # noqa: PLC0415
    from recovery.pause import pause  # noqa: PLC0415

    _pause_or_resume(
        lambda engine: pause(engine, component, actor=command_line_actor(), reason=reason)
    )


def resume_command(
    component: Annotated[str, typer.Argument(help="relay, or consumer:<name> (consumer:jobs)")],
) -> None:
    """Resume a paused consumer group or relay."""
    from recovery.audit import command_line_actor  # noqa: PLC0415
    from recovery.pause import resume  # noqa: PLC0415

    _pause_or_resume(lambda engine: resume(engine, component, actor=command_line_actor()))


def paused_command() -> None:
    """The paused components, one JSON object per line."""
    from recovery.pause import paused_components  # noqa: PLC0415

    for row in _with_engine(paused_components):
        _emit(row)


def _pause_or_resume(work: Callable[[AsyncEngine], Awaitable[PauseChange]]) -> None:
    from recovery.pause import UnknownComponentError  # noqa: PLC0415

    try:
        change = _with_engine(work)
    except UnknownComponentError as exc:
        raise typer.BadParameter(str(exc), param_hint="COMPONENT") from exc
    _emit(change.as_json())


def admin(
    host: Annotated[str, typer.Option(envvar="SLUICE_ADMIN_HOST")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="SLUICE_ADMIN_PORT")] = 8001,
) -> None:
    """Run the admin service (`POST /admin/reconcile/{square|airtable}`)."""
    from recovery.admin import create_admin_app  # noqa: PLC0415
    from sluice.http_server import run_http_server  # noqa: PLC0415

    settings = load_settings()
    if settings.admin_token is None:
        warn_at_start(
            "admin.token_not_set", "SLUICE_ADMIN_TOKEN is not set; every admin request gets 503"
        )
    # No drain limit: a reconcile run answers at its end, and a stop should not cut it off.
    run_http_server(
        create_admin_app(settings), settings, host=host, port=port, graceful_shutdown_seconds=None
    )

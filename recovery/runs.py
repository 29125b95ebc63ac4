"""One reconcile run, as the CLI, the CronJob and the admin endpoint start it.

Takes the source's advisory lock (a second run refuses), runs, records the summary in
`reconcile_runs` (the console's "last runs"), and returns it. The caller decides how to show
it: JSON on stdout and an exit code, or an HTTP response.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import text

from recovery.audit import command_line_actor
from recovery.lock import RunLockedError, run_lock
from recovery.progress import progress_bar
from recovery.reconcile_airtable import AirtableOptions, reconcile_airtable
from recovery.summary import RunSummary
from recovery.watermarks import all_watermarks
from sluice.db import create_engine, row_json, transaction
from sluice.jsontext import json_text

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

    from sluice.resilience import StateHook
    from sluice.settings import Settings

log = structlog.get_logger(__name__)

Source = Literal["square", "airtable"]

_RECORD = text(
    "INSERT INTO reconcile_runs (source, actor, started_at, ok, summary) "
    "VALUES (:source, :actor, :started_at, :ok, CAST(:summary AS jsonb))"
)
# A few runs an hour: the table is small, and a scan of it costs nothing.
_FORGET = text(
    "DELETE FROM reconcile_runs WHERE finished_at < now() - make_interval(days => :days)"
)
_RECENT = text(
    "SELECT id, source, actor, started_at, finished_at, ok, summary FROM reconcile_runs"
    " ORDER BY id DESC LIMIT :limit"
)
SOURCES: tuple[Source, ...] = ("square", "airtable")

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later

__all__ = ["EXIT_ERRORS", "EXIT_LOCKED", "EXIT_OK", "RunLockedError", "reconcile"]


def default_square_window(
    now: datetime | None = None, *, ahead_days: int = 1
) -> tuple[datetime, datetime]:
    """Yesterday 00:00 UTC to the end of tomorrow, or of the day `ahead_days` from today (the
    nightly run's SQUARE_RECONCILE_AHEAD_DAYS)."""
    today = (
        (now or datetime.now(UTC))
        .astimezone(UTC)
        .replace(hour=0, minute=0, second=0, microsecond=0)
    )
    return today - timedelta(days=1), today + timedelta(days=ahead_days + 1)


async def reconcile(  # noqa: PLR0913 - the options of both sources, by keyword
    settings: Settings,
    source: Source,
    *,
    square_window: tuple[datetime, datetime] | None = None,
    square_since: datetime | None = None,
    airtable: AirtableOptions | None = None,
    engine: AsyncEngine | None = None,
    show_progress: bool = False,
    square_transport: httpx.AsyncBaseTransport | None = None,
    breakers: StateHook | None = None,
    actor: str | None = None,
) -> RunSummary:
    """Run one reconcile of `source`. Raises RunLockedError if another run holds the lock.
    `breakers` hears the provider's circuit breaker change state (RunMetrics.breakers);
    `actor` is who started it (the command line's user unless said)."""
    own_engine = engine is None
    engine = engine or create_engine(
        settings.require_database_url(), pool_size=2, application_name=f"sluice-reconcile-{source}"
    )
    summary = RunSummary(source)
    started_at = datetime.now(UTC)
    try:
        async with run_lock(engine, f"reconcile:{source}"):
            with structlog.contextvars.bound_contextvars(source=source, run="reconcile"):
                if source == "square":
                    await _square(
                        settings,
                        engine,
                        summary,
                        window=square_window,
                        since=square_since,
                        show_progress=show_progress,
                        transport=square_transport,
                        breakers=breakers,
                    )
                else:
                    await _airtable(
                        settings,
                        engine,
                        summary,
                        airtable or AirtableOptions(),
                        show_progress=show_progress,
                        breakers=breakers,
                    )
            if source == "square":
                # Where the passes stand now, for the metrics (an alert when they fall behind).
                summary.details["watermarks"] = {
                    w["pass"]: w["watermark"] for w in await all_watermarks(engine)
                }
            summary.finish()
            await _record(
                engine,
                summary,
                actor or command_line_actor(),
                started_at,
                settings.event_retention_days,
            )
    finally:
        if own_engine:
            await engine.dispose()
    log.info(
        "reconcile.finished",
        source=source,
        created=summary.total("created"),
        updated=summary.total("updated"),
        errors=len(summary.errors),
    )
    return summary


async def _record(
    engine: AsyncEngine, summary: RunSummary, actor: str, started_at: datetime, keep_days: int
) -> None:
    """Record the run; runs older than the event retention go (0: every run is kept)."""
    params = {
        "source": summary.source,
        "actor": actor,
        "started_at": started_at,
        "ok": summary.ok,
        "summary": json_text(summary.as_json()),
    }
    async with transaction(engine) as conn:
        await conn.execute(_RECORD, params)
        if keep_days:
            await conn.execute(_FORGET, {"days": keep_days})


async def recent_runs(engine: AsyncEngine, *, limit: int = 10) -> list[dict[str, Any]]:
    """The latest reconcile runs of either source, newest first."""
    async with transaction(engine) as conn:
        rows = (await conn.execute(_RECENT, {"limit": limit})).all()
    return [row_json(row) for row in rows]


async def _square(  # noqa: PLR0913
    settings: Settings,
    engine: AsyncEngine,
    summary: RunSummary,
    *,
    window: tuple[datetime, datetime] | None,
    since: datetime | None,
    show_progress: bool,
    transport: httpx.AsyncBaseTransport | None,
    breakers: StateHook | None,
) -> None:
    from providers.square import SquareReader  # noqa: PLC0415
    from recovery.reconcile_square import (  # noqa: PLC0415
        SquareRecovery,
        SquareWindow,
        reconcile_square,
    )

    start, end = window or default_square_window()
    overlap = timedelta(minutes=settings.square_recovery_overlap_minutes)
    async with SquareReader.from_settings(
        settings, transport=transport, on_breaker_change=breakers
    ) as reader:
        with progress_bar("square", enabled=show_progress) as progress:
            await reconcile_square(
                engine,
                reader,
                SquareWindow(start, end),
                summary,
                recovery=SquareRecovery(
                    since=since, overlap=overlap, events=settings.square_search_events
                ),
                progress=progress,
            )


async def _airtable(  # noqa: PLR0913
    settings: Settings,
    engine: AsyncEngine,
    summary: RunSummary,
    options: AirtableOptions,
    *,
    show_progress: bool,
    breakers: StateHook | None,
) -> None:
    with progress_bar("airtable records", enabled=show_progress) as progress:
        await reconcile_airtable(
            settings, engine, summary, options, progress=progress, on_breaker_change=breakers
        )

"""The console's recovery actions: redrive and discard dead letters, replay from the store,
reconcile, pause and resume. Each is the same function the CLI calls, so both refuse and record
alike.

Every action is claimed first under its form's request key (recovery/audit.py
`claim_request`): a second submit of one form, a double click or a reload, finds the key taken
and does nothing. Replays and reconciles run on in the admin process after the answer; a second
one of the same kind refuses while the first holds its advisory lock, as on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from consumers.registry import CONSUMERS
from recovery.audit import claim_request
from recovery.console.web import action, back, request_key
from recovery.dead_letters import discard, redrive
from recovery.lock import RunLockedError
from recovery.pause import COMPONENTS, pause, resume
from recovery.replay_store import StoreFilter, count_matching, replay_store
from recovery.runs import SOURCES, default_square_window, reconcile
from sluice.audit import write_audit
from sluice.db import transaction
from sluice.query import ParameterError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from starlette.requests import Request
    from starlette.responses import Response

    from sluice.query import Query

log = structlog.get_logger(__name__)

# How long a started run is watched for an at-once refusal (another run holds the lock).
_REFUSAL_WINDOW_SECONDS = 1.0
_MAX_REASON = 500


async def _claim(  # noqa: PLR0913, PLR0917 - the request, and the audit row its action gets
    request: Request, form: Query, who: str, what: str, target: str, detail: dict[str, Any]
) -> bool:
    return await claim_request(
        request.app.state.engine,
        request_key(form),
        actor=who,
        action=f"console:{what}",
        target=target,
        detail=detail,
    )


def _consumer(form: Query) -> str | None:
    consumer = form.text("consumer")
    if consumer is not None and consumer not in CONSUMERS:
        raise ParameterError("consumer", f"choose one of {', '.join(CONSUMERS)}")
    return consumer


def _letter_id(form: Query) -> int | None:
    if not form.given("id") or not form.value("id"):
        return None
    return form.integer("id", default=0, minimum=1, maximum=2**63 - 1)


def _selection(letter_id: int | None, consumer: str | None) -> str:
    if letter_id is not None:
        return f"dead letter {letter_id}"
    return f"every open dead letter of {consumer}" if consumer else "every open dead letter"


@action
async def redrive_letters(request: Request, form: Query, who: str) -> Response:
    letter_id, consumer = _letter_id(form), _consumer(form)
    target = f"dead_letter:{letter_id}" if letter_id else f"dead_letters:{consumer or 'all'}"
    if not await _claim(request, form, who, "dlq.redrive", target, {"consumer": consumer}):
        return back(request, "/dead-letters", "Already done: that form was submitted before.")
    result = await redrive(request.app.state.engine, letter_id, actor=who, consumer=consumer)
    message = f"Redrove {len(result.redriven)} ({_selection(letter_id, consumer)})."
    if result.errors:
        message += f" {len(result.errors)} could not be put back: {result.errors[0]['error']}"
    return back(request, "/dead-letters", message)


@action
async def discard_letters(request: Request, form: Query, who: str) -> Response:
    letter_id, consumer = _letter_id(form), _consumer(form)
    reason = (form.text("reason", max_length=_MAX_REASON) or "").strip()
    if not reason:
        raise ParameterError("reason", "say why these dead letters are discarded")
    target = f"dead_letter:{letter_id}" if letter_id else f"dead_letters:{consumer or 'all'}"
    detail = {"consumer": consumer, "reason": reason}
    if not await _claim(request, form, who, "dlq.discard", target, detail):
        return back(request, "/dead-letters", "Already done: that form was submitted before.")
    result = await discard(
        request.app.state.engine, letter_id, reason=reason, actor=who, consumer=consumer
    )
    return back(
        request,
        "/dead-letters",
        f"Discarded {len(result.discarded)} ({_selection(letter_id, consumer)}).",
    )


def store_filter(query: Query) -> StoreFilter:
    """A replay's filter, from a form or a query string."""
    source = query.text("source")
    if source not in SOURCES:
        raise ParameterError("source", f"choose one of {', '.join(SOURCES)}")
    entity = query.text("entity")
    entity_type = entity_id = None
    if entity:
        entity_type, sep, entity_id = entity.partition(":")
        if not sep or not entity_type or not entity_id:
            raise ParameterError("entity", "must be TYPE:ID, e.g. booking:abc123")
    return StoreFilter(
        source,
        since=query.instant("since", dates=True),
        until=query.instant("until", dates=True),
        entity_type=entity_type,
        entity_id=entity_id,
    )


def _start(request: Request, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.create_task(work, name=name)
    tasks: set[asyncio.Task[None]] = request.app.state.tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def _refused_at_once(task: asyncio.Task[None]) -> str | None:
    """The refusal of a run that could not take its lock, or None once it is under way."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), _REFUSAL_WINDOW_SECONDS)
    if task.done() and isinstance(task.exception(), RunLockedError):
        return str(task.exception())
    return None


@action
async def replay(request: Request, form: Query, who: str) -> Response:
    where = store_filter(form)
    engine = request.app.state.engine
    if not form.boolean("confirm"):
        count = await count_matching(engine, where)
        request.session["replay_preview"] = {"count": count, **_filter_json(where)}
        return back(request, "/recovery", f"Dry run: {count:,} stored events match.")
    detail = _filter_json(where)
    if not await _claim(request, form, who, "replay", f"replay:{where.source}", detail):
        return back(request, "/recovery", "Already started: that form was submitted before.")
    request.session.pop("replay_preview", None)

    async def run() -> None:
        result = await replay_store(engine, where)
        async with transaction(engine) as conn:
            done = {**detail, **result.as_json()}
            await write_audit(conn, who, "replay.store", f"replay:{where.source}", done)

    refused = await _refused_at_once(_start(request, f"replay:{where.source}", run()))
    if refused:
        return back(request, "/recovery", f"Not started: {refused}.")
    return back(request, "/recovery", f"Replay of {where.source} started; see the audit log.")


def _filter_json(where: StoreFilter) -> dict[str, Any]:
    return {
        "source": where.source,
        "since": where.since.isoformat() if where.since else None,
        "until": where.until.isoformat() if where.until else None,
        "entity": f"{where.entity_type}:{where.entity_id}" if where.entity_type else None,
    }


@action
async def reconcile_source(request: Request, form: Query, who: str) -> Response:
    source = request.path_params["source"]
    if source not in SOURCES:
        raise ParameterError("source", f"choose one of {', '.join(SOURCES)}")
    # The checkbox's value: the nightly run's wider booking sweep, now.
    ahead = source == "square" and form.boolean("ahead")
    if not await _claim(request, form, who, "reconcile", f"reconcile:{source}", {"ahead": ahead}):
        return back(request, "/recovery", "Already started: that form was submitted before.")
    state = request.app.state
    days = state.settings.square_reconcile_ahead_days
    window = default_square_window(ahead_days=days) if ahead else None

    async def run() -> None:
        summary = await reconcile(
            state.settings,
            source,
            square_window=window,
            engine=state.engine,
            breakers=state.metrics.breakers,
            actor=who,
        )
        state.metrics.record(summary)

    refused = await _refused_at_once(_start(request, f"reconcile:{source}", run()))
    if refused:
        return back(request, "/recovery", f"Not started: {refused}.")
    return back(request, "/recovery", f"Reconcile of {source} started; its summary follows.")


def _component(request: Request) -> str:
    component: str = request.path_params["component"]
    if component not in COMPONENTS:
        raise ParameterError("component", f"choose one of {', '.join(COMPONENTS)}")
    return component


@action
async def pause_component(request: Request, form: Query, who: str) -> Response:
    component = _component(request)
    reason = form.text("reason", max_length=_MAX_REASON) or None
    if not await _claim(request, form, who, "pause", component, {"reason": reason}):
        return back(request, "/recovery", "Already done: that form was submitted before.")
    change = await pause(request.app.state.engine, component, actor=who, reason=reason)
    said = "Paused" if change.changed else "Already paused:"
    return back(request, "/recovery", f"{said} {component}.")


@action
async def resume_component(request: Request, form: Query, who: str) -> Response:
    component = _component(request)
    if not await _claim(request, form, who, "resume", component, {}):
        return back(request, "/recovery", "Already done: that form was submitted before.")
    change = await resume(request.app.state.engine, component, actor=who)
    said = "Resumed" if change.changed else "Was not paused:"
    return back(request, "/recovery", f"{said} {component}.")

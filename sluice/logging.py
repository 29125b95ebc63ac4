"""structlog, configured once: JSON when not on a terminal, readable console output when on one.

Our own lines go through structlog's fast path (a filtering bound logger writing to stderr).
Libraries log through the standard library (uvicorn, aiokafka, alembic, httpx, asyncio); their
records go to one root handler whose structlog `ProcessorFormatter` runs them through the same
processors (`foreign_pre_chain`: context variables, level, time, plus the logger's name) and the
same renderer, so in JSON mode every line is JSON, theirs included, and in console mode every
line reads alike. Python's warnings are logged too (`py.warnings`).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Literal

import structlog

if TYPE_CHECKING:
    from structlog.typing import Processor

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

_LEVELS: dict[LogLevel, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Libraries whose info lines repeat ours, shown from warning up unless the level is debug: httpx
# logs every request (our lines and metrics say what the calls did), aiokafka every step of
# joining a group (consumer.assigned and consumer.started say where a consumer stands).
_REPEATING_LOGGERS = ("httpx", "aiokafka")


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time, not the stream seen at configuration
    (test runners and daemons swap it). Our lines and the libraries' are written whole, one at
    a time, so that two threads never interleave parts of lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _CurrentStderr()


class _LibraryHandler(logging.StreamHandler[_CurrentStderr]):
    """The root handler configure_logging installs (and replaces when called again)."""


def configure_logging(log_format: LogFormat = "auto", level: LogLevel = "info") -> None:
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    _route_library_logs(renderer, shared, _LEVELS[level])


def _route_library_logs(renderer: Processor, shared: list[Processor], level: int) -> None:
    handler = _LibraryHandler(_STDERR)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for installed in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(installed)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.NOTSET if level <= logging.DEBUG else logging.WARNING
    for name in _REPEATING_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(capture=True)

"""The settings of one `sluice` invocation, built on first use and kept for the rest of it.

Every command asks here instead of building its own: the environment is read once, validated
once, and logging is configured from it before the command does anything else. The root
command's callback starts each invocation afresh (a test's `CliRunner.invoke` included).
"""

from __future__ import annotations

from contextvars import ContextVar

from sluice.settings import Settings

_current: ContextVar[Settings | None] = ContextVar("sluice_settings", default=None)


def begin_invocation() -> None:
    """Nothing read by an earlier invocation in this process is carried over."""
    _current.set(None)


def warn_at_start(event: str, detail: str) -> None:
    """A server's warning about its configuration, on the log like every other line (in JSON
    mode, a JSON line), once settings() has configured logging."""
    import structlog  # noqa: PLC0415 - keep `--help` fast

    structlog.get_logger("commands").warning(event, detail=detail)


def settings() -> Settings:
    loaded = _current.get()
    if loaded is None:
        from sluice.logging import configure_logging  # noqa: PLC0415 - keep `--help` fast

        loaded = Settings()
        configure_logging(loaded.log_format, loaded.log_level)
        _current.set(loaded)
    return loaded

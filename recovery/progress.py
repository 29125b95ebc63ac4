"""A progress bar on stderr for long runs (rich, which typer already brings), or nothing at all."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def set_total(self, total: int | None) -> None: ...


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass


SILENT: Progress = _Silent()


class _RichProgress:
    def __init__(self, bar: object, task: object) -> None:
        self._bar = bar
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)  # type: ignore[attr-defined]

    def set_total(self, total: int | None) -> None:
        self._bar.update(self._task, total=total)  # type: ignore[attr-defined]


@contextmanager
def progress_bar(
    description: str, *, enabled: bool, total: int | None = None
) -> Iterator[Progress]:
    """A bar on stderr when `enabled` and stderr is a terminal; stdout stays the JSON summary."""
    if not enabled:
        yield SILENT
        return
    from rich.console import Console  # noqa: PLC0415 - only interactive runs pay for rich
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress  # noqa: PLC0415

    console = Console(stderr=True)
    if not console.is_terminal:
        yield SILENT
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with RichProgress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield _RichProgress(bar, task)

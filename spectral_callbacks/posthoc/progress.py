"""A progress bar on stderr for long analyses: rich's, on a terminal only (nothing in pipes or tests)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(
    total: int, description: str, *, enabled: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """A function to call with the number of tasks that have just finished.

    Args:
        total: the number of tasks.
        description: the text before the bar.
        enabled: show it; by default when stderr is a terminal and rich is installed.
    """
    if enabled is None:
        enabled = sys.stderr.isatty() and importlib.util.find_spec("rich") is not None
    if not enabled or total < 1:
        yield lambda count: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda count: progress.advance(task, count)

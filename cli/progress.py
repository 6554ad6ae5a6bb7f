"""The command line's progress bars, made in one place so that every command shows them alike.

`bar(*columns)` is a rich Progress with the description, the bar and done/total, followed by
the columns a command adds; `stage_reporter(bar)` turns it into the `progress(stage, done,
total)` callback that `prepare` and `evaluate` take, one task per stage. Commands import this
module inside the function that needs it, so `stforecast --help` does not load rich's progress.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskID


def bar(*columns: str | ProgressColumn, transient: bool = True) -> Progress:
    """A progress display: description, bar, done/total, then `columns`; gone when finished
    unless `transient=False`."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        *columns,
        transient=transient,
    )


def stage_reporter(progress: Progress) -> Callable[[str, int, int], None]:
    """An engine `progress(stage, done, total)` callback drawing one task per stage."""
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return report

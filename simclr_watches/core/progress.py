"""Progress bars on stderr, so stdout stays clean for results (e.g. ``search --json``)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# soft_wrap: a long path in an error message must stay on one line, greppable.
stderr = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True, fields: str = "") -> Iterator[Callable[..., None]]:
    """Yields ``advance(n, **fields)``; extra fields (e.g. loss) are shown after the bar."""
    if not enabled:
        yield lambda n=1, **kw: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task(label, total=total, info=fields)

        def advance(n: int = 1, **kw: object) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in kw.items())
            bar.update(task, advance=n, **({"info": info} if kw else {}))

        yield advance

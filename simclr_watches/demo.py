"""The first five minutes: a catalog, an index, a simulated user photo, a search, a contact sheet.

Runs on a CPU in a few minutes with the default model and no data of the user's:
the catalog is rendered by :mod:`simclr_watches.synth` unless one is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simclr_watches.data import scan_images
from simclr_watches.errors import SimclrWatchesError
from simclr_watches.index import build_index
from simclr_watches.search import QueryResult, Searcher
from simclr_watches.sheet import write_sheet


@dataclass
class DemoResult:
    source: Path
    query: Path
    result: QueryResult
    files: list[Path]

    @property
    def source_rank(self) -> int | None:
        """Rank of the watch the photo was made from (None: not in the top-k)."""
        src = str(self.source.resolve())
        return next((h.rank for h in self.result.hits if h.path == src), None)


def run_demo(out_dir: Path | str, catalog: Path | str | None = None, *, n: int = 60, seed: int = 0,
             severity: str = "medium", top_k: int = 5, checkpoint: str | None = None) -> DemoResult:
    """Builds a demo in ``out_dir``: ``catalog/`` (if none given), ``index/``, ``query.jpg``, ``sheet.png/.html``.

    The demo's own ``index/`` is rebuilt on every run; nothing outside ``out_dir`` is written.

    Raises:
        SimclrWatchesError: the given catalog has no image.
    """
    from simclr_watches.simulate import simulate_file
    from simclr_watches.synth import make_catalog

    out_dir = Path(out_dir)
    if catalog is None:
        catalog = out_dir / "catalog"
        make_catalog(catalog, n, seed=seed, size=256)
    paths = scan_images(catalog)
    if not paths:
        raise SimclrWatchesError(f"{catalog}: no image files")
    build_index(catalog, out_dir / "index", checkpoint=checkpoint, force=True)
    # A fixed pick per seed, so the same command shows the same example.
    source = paths[(seed * 7919 + 11) % len(paths)]
    query = simulate_file(source, out_dir / "query.jpg", seed=seed, severity=severity)
    [result] = Searcher(out_dir / "index").search([(str(query), query)], top_k=top_k)
    files = write_sheet([result], out_dir / "sheet.png")
    return DemoResult(source, query, result, files)

"""The first five minutes: a catalog, an index, a simulated user photo, a search, a contact sheet.

Runs on a CPU in a few minutes with the default model and no data of the user's:
the catalog is rendered by :mod:`simclr_watches.data.synth` unless one is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from simclr_watches import __version__
from simclr_watches.core.atomic import atomic_path, write_text_atomic
from simclr_watches.data.images import scan_images
from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.retrieval.index import INDEX_OUTPUT, build_index
from simclr_watches.core.outputs import OutputKind, html_owned, json_format_owned, owned_folder, png_owned, prepare_output
from simclr_watches.retrieval.search import QueryResult, Searcher
from simclr_watches.retrieval.sheet import write_sheet
from simclr_watches.data.synth import SYNTH_OUTPUT

DEMO_FORMAT = "simclr-watches-demo"
DEMO_FILE = "demo.json"  # written first: marks the folder as a demo, even one that was interrupted
DEMO_OUTPUT = OutputKind(
    "demo folder",
    folder=True,
    owned=owned_folder({DEMO_FILE: json_format_owned(DEMO_FORMAT), "catalog": SYNTH_OUTPUT.owned,
                        "index": INDEX_OUTPUT.owned, "query.jpg": Path.is_file, "sheet.png": png_owned,
                        "sheet.html": html_owned}, required=DEMO_FILE),
)


@dataclass
class DemoResult:
    source: Path
    query: Path
    result: QueryResult
    files: list[Path]
    index: Path

    @property
    def source_rank(self) -> int | None:
        """Rank of the watch the photo was made from (None: not in the top-k)."""
        src = str(self.source.resolve())
        return next((h.rank for h in self.result.hits if h.path == src), None)


def run_demo(out_dir: Path | str, catalog: Path | str | None = None, *, n: int = 60, seed: int = 0,
             severity: str = "medium", top_k: int = 5, checkpoint: str | None = None,
             force: bool = False) -> DemoResult:
    """Builds a demo in ``out_dir``: demo.json, catalog/ (if none given), index/, query.jpg, sheet.png/.html.

    Nothing outside ``out_dir`` is written. ``out_dir`` may be missing or empty; a demo
    written there earlier is rebuilt only with ``force``; any other folder is refused.

    Raises:
        SimclrWatchesError: ``out_dir`` may not be written or overlaps the given catalog
            (checked before any work), or the given catalog has no image.
    """
    from simclr_watches.data.simulate import simulate_file
    from simclr_watches.data.synth import make_catalog

    out_dir = Path(out_dir)
    prepare_output(out_dir, DEMO_OUTPUT, force=force, inputs=[catalog])
    _write_marker(out_dir, catalog, n=n, seed=seed)
    if catalog is None:
        catalog = out_dir / "catalog"
        make_catalog(catalog, n, seed=seed, size=256, force=True)
    paths = scan_images(catalog)
    if not paths:
        raise SimclrWatchesError(f"{catalog}: no image files")
    build_index(catalog, out_dir / "index", checkpoint=checkpoint, force=True)
    # A fixed pick per seed, so the same command shows the same example.
    source = paths[(seed * 7919 + 11) % len(paths)]
    query = out_dir / "query.jpg"
    with atomic_path(query) as tmp:
        simulate_file(source, tmp, seed=seed, severity=severity)
    [result] = Searcher(out_dir / "index").search([(str(query), query)], top_k=top_k)
    files = write_sheet([result], out_dir / "sheet.png", force=True)
    return DemoResult(source, query, result, files, out_dir / "index")


def _write_marker(out_dir: Path, catalog: Path | str | None, *, n: int, seed: int) -> None:
    """Writes ``demo.json``, which marks ``out_dir`` as a demo folder of this program."""
    marker = {"format": DEMO_FORMAT, "package_version": __version__,
              "catalog": str(catalog) if catalog is not None else "catalog (synthetic)", "n": n, "seed": seed}
    write_text_atomic(out_dir / DEMO_FILE, json.dumps(marker, indent=1) + "\n")

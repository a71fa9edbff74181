"""How long one ``remove`` takes on a large index, and how many times it opens the index.

Writes a synthetic index (N random unit rows of width D, no PCA, in a temporary folder), adds
``--pending`` rows without compacting (the manifest then lists each), then removes one item at a time, ``--runs`` times (few enough that no compaction starts), timing
each :func:`simclr_watches.retrieval.update.remove_items` call and counting its
:func:`simclr_watches.retrieval.index.load_index` openings. Run it from two checkouts
(``PYTHONPATH=CHECKOUT``) to compare; on a shared machine, compare medians taken back to back.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/update_loads.py --items 20000 --dim 1280
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

def make_index(directory: Path, items: int, dim: int, trees: int) -> None:
    """A synthetic index of ``items`` random unit rows (seeded), its model record made up."""
    from simclr_watches.model import Preprocessing
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.retrieval.index import write_index
    from simclr_watches.weights import ModelInfo

    rng = np.random.default_rng(0)
    v = rng.normal(size=(items, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    records = [EmbeddedItem(f"/catalog/{i:07d}.jpg", f"{i:064x}", 1000 + i) for i in range(items)]
    write_index(directory, v, records, ModelInfo("synthetic", "a" * 64, "lite0", dim, Preprocessing(size=224)),
                Preprocessing(size=224), n_trees=trees)


def add_pending(directory: Path, count: int, dim: int) -> None:
    """Adds ``count`` random rows without compacting: the manifest then lists ``count`` added records."""
    from simclr_watches.retrieval.index import load_index
    from simclr_watches.retrieval.update import apply_change

    index = load_index(directory)
    rng = np.random.default_rng(1)
    v = rng.normal(size=(count, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    first = index.meta["next_id"]
    new = [{"id": first + i, "path": f"/added/{i:07d}.jpg", "sha256": f"{first + i:064x}", "bytes": 1}
           for i in range(count)]
    apply_change(index, new, v, [], compact=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--pending", type=int, default=1900,
                    help="items added (not compacted) before the removals: the manifest lists each")
    args = ap.parse_args()

    import simclr_watches.retrieval.index as index_mod
    from simclr_watches.retrieval.update import remove_items

    os.environ.setdefault("SIMCLR_WATCHES_HOME", tempfile.mkdtemp(prefix="update-loads-home-"))
    with tempfile.TemporaryDirectory() as tmp:
        idx = Path(tmp) / "idx"
        t0 = time.perf_counter()
        make_index(idx, args.items, args.dim, args.trees)
        print(f"built {args.items} x {args.dim} ({args.trees} trees) in {time.perf_counter() - t0:.1f} s")
        if args.pending:
            add_pending(idx, args.pending, args.dim)
        loads = []
        real = index_mod._load_once

        def counted(directory):
            loads.append(directory)
            return real(directory)

        index_mod._load_once = counted
        t0 = time.perf_counter()
        index_mod.load_index(idx)
        one_load = time.perf_counter() - t0
        times, per_call = [], []
        for run in range(args.runs):
            loads.clear()
            t0 = time.perf_counter()
            report = remove_items(idx, [run])
            times.append(time.perf_counter() - t0)
            per_call.append(len(loads))
            assert [r["id"] for r in report.removed] == [run] and not report.compacted
        print(f"load_index: {one_load:.3f} s; remove_items: median {statistics.median(times):.3f} s "
              f"(runs {', '.join(f'{t:.3f}' for t in times)}); index openings per remove: {sorted(set(per_call))}")


if __name__ == "__main__":
    main()

"""What scoring every item of a small catalog costs a query, against asking the forest for candidates.

A localised query scores its regions (the whole view and the squares around the learnt box:
3 vectors) against the catalog's stored rows (float16, PCA-512). Below ``EXACT_ITEMS`` items the
search skips the forest and scores every row (:func:`simclr_watches.retrieval.index.forest_candidates`);
above it, each region asks the 64-d forest for its 50 nearest items (``BoxSearchConfig.candidates``)
and only those are scored, renormalised from float16. This times both paths, candidates and exact
scoring together (:func:`simclr_watches.retrieval.scoring.score_regions`), on random unit rows of
each size; the exact path scores the float32 copy an index makes once (``Index.scoring_rows``).

Usage:
    python benchmarks/exact_candidates.py [--sizes 1000,4096,16384] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4096,16384")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    from simclr_watches.retrieval import index as index_mod
    from simclr_watches.retrieval.index import DEFAULT_TREES, DEFAULT_WIDTH, FOREST_WIDTH, build_forest
    from simclr_watches.retrieval.projection import stored_rows, unit_rows
    from simclr_watches.retrieval.scoring import AnnoyCandidates, score_regions

    rng = np.random.default_rng(0)
    print(f"| items | forest (50 per region) p50 ms | every item p50 ms |  (EXACT_ITEMS = {index_mod.EXACT_ITEMS})")
    print("|---|---|---|")
    for n in (int(v) for v in args.sizes.split(",")):
        rows = stored_rows(unit_rows(rng.standard_normal((n, DEFAULT_WIDTH))))
        forest = build_forest(rows, DEFAULT_TREES, width=FOREST_WIDTH)
        queries = [unit_rows(rng.standard_normal((3, DEFAULT_WIDTH))) for _ in range(args.repeats)]
        cells = []
        for exact_items, scored in ((0, rows), (n, unit_rows(rows))):  # exact: on Index.scoring_rows' float32 copy
            index_mod.EXACT_ITEMS = exact_items
            candidates = AnnoyCandidates(forest, 50)
            times = []
            for q in queries:
                t0 = time.perf_counter()
                score_regions(q, scored, candidates, top_m=3)
                times.append(time.perf_counter() - t0)
            cells.append(f"{1e3 * statistics.median(times):.2f}")
        print(f"| {n:,} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()

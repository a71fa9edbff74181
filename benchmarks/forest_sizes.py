"""Forest size against recall at scale: Annoy forests of other widths and tree counts over an index's rows.

Reads the rows, queries and exact top-10 that ``benchmarks/scale.py`` left in its work folder for
one size, builds each forest (``build_forest`` over the rows' leading coordinates), and reports
its file size, recall@10 and query p50 when ``C`` forest candidates are scored exactly on the
float16 rows (as ``Index.query`` does, ``search_k`` = 2 x C x trees).

    python benchmarks/scale.py --sizes 1000000 --out /tmp/scale
    python benchmarks/forest_sizes.py /tmp/scale/n1000000 --forests 64x25,128x25 --candidates 256,512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="a size's folder of benchmarks/scale.py (idx/, queries.npy, truth.npy)")
    ap.add_argument("--forests", default="64x25,128x25", help="WIDTHxTREES, comma-separated")
    ap.add_argument("--candidates", default="256,512")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    from simclr_watches.retrieval.index import build_forest
    from simclr_watches.retrieval.projection import unit_rows

    rows = np.load(next((args.work / "idx").glob("vectors-*.npy")), mmap_mode="r", allow_pickle=False)
    queries = np.load(args.work / "queries.npy")[: args.queries]
    truth = np.load(args.work / "truth.npy")[: args.queries]
    print("| forest | file MB | build s | candidates | recall@10 | p50 ms |\n|---|---|---|---|---|---|")
    for spec in args.forests.split(","):
        width, trees = (int(x) for x in spec.split("x"))
        t0 = time.perf_counter()
        forest = build_forest(rows, trees, width)
        build = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            forest.save(str(Path(tmp) / "f.ann"))
            size = os.path.getsize(Path(tmp) / "f.ann")
            for c in (int(x) for x in args.candidates.split(",")):
                hits, times = 0, []
                for q, want in zip(queries, truth):
                    t = time.perf_counter()
                    cand = np.array(forest.get_nns_by_vector(q[:width].tolist(), c, search_k=2 * c * trees))
                    top = cand[np.argsort(-(unit_rows(np.asarray(rows[cand], np.float32)) @ q), kind="stable")[:10]]
                    times.append(time.perf_counter() - t)
                    hits += len(set(top.tolist()) & set(want.tolist()))
                print(f"| {width}-d, {trees} trees | {size / 2**20:.0f} | {build:.0f} | {c} | {hits / truth.size:.3f} | "
                      f"{1000 * statistics.median(times):.2f} |", flush=True)
            forest.unload()


if __name__ == "__main__":
    main()

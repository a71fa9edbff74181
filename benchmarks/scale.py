"""A million watches: build, size, opening, memory, latency and recall of indexes of 10k to 1M items.

Items are structured synthetic vectors at the shipped width: the real watches-dev embeddings
(a (954, D) float32 ``.npy``, e.g. a format-1 index's ``embeddings.npy``) projected by the
PCA build-index fits (retrieval/projection.py), then each item a random point between two
real watches plus Gaussian noise, unit norm (colourway variants around real models). Each
index is written by the real writer (``write_index``); queries are fresh synthetic items.
Per size it reports: build time, bytes on disk per item, time to open (the first opening after
the build, whose writer vouched for its files in the user's cache; later ones; and the first
opening of the same files by a user whose cache never saw them, which runs the O(N) checks, as
for an index copied in from elsewhere), resident memory of a query
process after its queries (all of it, and its anonymous part: the rest is pages of the
memory-mapped files, which the kernel reclaims under pressure), ANN query p50
(``Index.query``, k = 10) and recall@10 against an
exact search of the stored rows. Openings and queries run in a fresh process per index
(this file with ``--probe``) with its own verification cache.

    nice -n 19 python benchmarks/scale.py --sizes 10000,100000,1000000 --out /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_SOURCE = "/work/scratch/wdev-idx/embeddings.npy"
NOISE = 0.15  # norm of the Gaussian perturbation of a (unit) mix of two real watches
MIX = 0.3  # an item lies up to this far from its first watch towards the second


def synthetic(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, W) float32 unit rows: a point between two real watches of ``base`` (unit rows), plus noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        a, b = rng.integers(len(base), size=(2, m))
        t = rng.uniform(0, MIX, size=(m, 1)).astype(np.float32)
        x = (1 - t) * base[a] + t * base[b]
        x += rng.normal(size=x.shape).astype(np.float32) * (NOISE / np.sqrt(base.shape[1]))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) rows of the highest cosine to each query, best first (exact, chunked)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(rows), 200_000):
        chunk = rows[start : start + 200_000].astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        s = queries @ chunk.T
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(chunk)), s.shape)], axis=1)
        top = np.argpartition(-s_all, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``: its peak), in MB.

    Not ``ru_maxrss``: Linux carries that over from the parent across fork and exec.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 1024


def probe(index_dir: str, queries_file: str, truth_file: str) -> dict:
    """In a fresh process: open the index, query it; timings, memory and recall."""
    from simclr_watches.retrieval.index import load_index

    t0 = time.perf_counter()
    index = load_index(index_dir)
    opened = time.perf_counter() - t0
    queries, truth = np.load(queries_file), np.load(truth_file)
    times, hits = [], 0
    for q, want in zip(queries, truth):
        t = time.perf_counter()
        rows, _ = index.query(q, 10)
        times.append(time.perf_counter() - t)
        hits += len(set(rows) & set(want.tolist()))
    return {"open_s": opened, "p50_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * float(np.percentile(times, 90)),
            "recall10": hits / truth.size, "rss_mb": status_mb("VmRSS"), "peak_rss_mb": status_mb("VmHWM"),
            "rss_anon_mb": status_mb("RssAnon"), "rss_file_mb": status_mb("RssFile")}


def run_probe(index_dir: Path, work: Path, cache: Path) -> dict:
    env = {**os.environ, "SIMCLR_WATCHES_HOME": str(cache), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, "--probe", str(index_dir), str(work / "queries.npy"),
                          str(work / "truth.npy")], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(n: int, base: np.ndarray, args: argparse.Namespace, meta: tuple) -> dict:
    from simclr_watches.retrieval.embed import EmbeddedItem
    from simclr_watches.retrieval.index import write_index

    model, pre, projection = meta
    work = args.out / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    rows = synthetic(base, n, seed=1)
    queries = synthetic(base, args.queries, seed=2)
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", exact_top(rows.astype(np.float16), queries, 10))
    items = [EmbeddedItem(Path(f"/catalog/brand-{i % 997}/model-{i:07d}.jpg"), f"{i:064x}", 150_000 + i % 9000)
             for i in range(n)]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as elsewhere:
        os.environ["SIMCLR_WATCHES_HOME"] = cache  # the writer vouches for its files in this user's cache
        t0 = time.perf_counter()
        write_index(work / "idx", rows, items, model, pre, n_trees=args.trees, projection=projection, force=True)
        build = time.perf_counter() - t0
        del rows, items
        size = sum(f.stat().st_size for f in (work / "idx").iterdir())
        first = run_probe(work / "idx", work, Path(cache))  # the first opening after this user's build
        foreign = run_probe(work / "idx", work, Path(elsewhere))  # files this user never wrote: checked
        later = [run_probe(work / "idx", work, Path(cache)) for _ in range(args.runs)]
    return {"n": n, "build_s": build, "bytes_per_item": size / n, "first_open_s": first["open_s"],
            "foreign_open_s": foreign["open_s"],
            "open_s": statistics.median(r["open_s"] for r in later),
            "p50_ms": statistics.median(r["p50_ms"] for r in later),
            "recall10": later[0]["recall10"], "rss_mb": statistics.median(r["rss_mb"] for r in later),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in later),
            "rss_anon_mb": statistics.median(r["rss_anon_mb"] for r in later),
            "first_peak_rss_mb": first["peak_rss_mb"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        print(json.dumps(probe(*sys.argv[2:5])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="(N, D) float32 .npy of real embeddings")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--width", type=int, default=512, help="stored width (build-index --pca)")
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3, help="query processes per index (after the first opening)")
    ap.add_argument("--out", type=Path, required=True, help="work folder (indexes are kept there)")
    args = ap.parse_args()

    from simclr_watches.model import Preprocessing
    from simclr_watches.retrieval.index import fit_projection
    from simclr_watches.weights import ModelInfo

    real = np.load(args.source, allow_pickle=False).astype(np.float32)
    projection = fit_projection(real, args.width)
    base = real if projection is None else projection.apply(real)
    model = ModelInfo("synthetic", "0" * 64, "efficientnet_lite0", real.shape[1], Preprocessing(size=160))
    print("| items | build s | bytes/item | first open after the build s | open s | first open elsewhere (checks) s "
          "| query RSS MB (anonymous) | p50 ms | recall@10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        r = bench(n, base, args, (model, model.preprocessing, projection))
        print(f"| {n:,} | {r['build_s']:.1f} | {r['bytes_per_item']:.0f} | {r['first_open_s']:.3f} | "
              f"{r['open_s']:.3f} | {r['foreign_open_s']:.2f} | {r['rss_mb']:.0f} ({r['rss_anon_mb']:.0f}) | {r['p50_ms']:.2f} | "
              f"{r['recall10']:.3f} |", flush=True)
        print(json.dumps(r), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

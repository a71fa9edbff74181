"""Cold start: wall time and peak memory of one ``simclr-watches search`` process, launch to exit.

Each run is a fresh Python process (imports, model loading, index opening, one localised query),
as a user meets it. With ``--baseline DIR`` the same command also runs from another checkout of
simclr-watches (e.g. ``git worktree add /tmp/before COMMIT``), alternating run by run, and the
ratio of each pair is reported: on a shared, noisy machine the ratio is the figure to trust.

    python benchmarks/cold_start.py --index IDX ../shared/data/watches-dev/images/designer_901gm/1.jpg
    python benchmarks/cold_start.py --index IDX --baseline /tmp/before --baseline-index IDX0 PHOTO
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_once(checkout: Path, index: str, query: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one search process run from ``checkout``."""
    cmd = [sys.executable, "-m", "simclr_watches", "search", query, "--index", index, "--json", "-k", "5"]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=checkout)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"search from {checkout} failed:\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def summary(label: str, runs: list[tuple[float, float]]) -> str:
    walls, rss = [w for w, _ in runs], [r for _, r in runs]
    return (f"{label}: wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), "
            f"peak RSS median {statistics.median(rss):.0f} MB, {len(runs)} runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("query", help="one query photo")
    ap.add_argument("--index", required=True, help="index folder built by this checkout's build-index")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with, run alternately")
    ap.add_argument("--baseline-index", help="index built by the baseline checkout (default: --index)")
    args = ap.parse_args()
    run_once(REPO, args.index, args.query)  # warm the OS file cache: we measure the program, not the disk
    runs, base = [], []
    for _ in range(args.runs):
        runs.append(run_once(REPO, args.index, args.query))
        if args.baseline:
            base.append(run_once(args.baseline, args.baseline_index or args.index, args.query))
    print(summary("this checkout", runs))
    if args.baseline:
        print(summary(f"baseline {args.baseline}", base))
        ratios = [w / b for (w, _), (b, _) in zip(runs, base)]
        print(f"wall ratio this/baseline: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()

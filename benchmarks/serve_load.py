"""Load on ``simclr-watches serve``: concurrent clients searching by photo while items are added and compacted.

A local server (a real ``serve`` process on 127.0.0.1) answers N client threads posting photos to
``/api/search`` for T seconds; meanwhile one more client adds catalog photos through
``POST /api/items`` every few seconds, and halfway through this script compacts the index with
the library (another process than the server, as ``simclr-watches compact`` would). Reported:
requests, errors (any status but 200/201; the target is 0), p50/p99 search latency, and the
server's resident memory (``/proc/PID/status``: VmRSS, VmHWM) before and after the load.

    python benchmarks/serve_load.py                        # index of 300 watches-dev photos, 8 clients, 60 s
    python benchmarks/serve_load.py --clients 8 --seconds 60 --catalog DIR --limit 300
    python benchmarks/serve_load.py --no-writes             # search only

The index is built once into ``--work`` (reused by later runs) and copied for each run, so the
additions never touch the original.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data/watches-dev")


def multipart(files: list[bytes], fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body of ``image`` file fields and text fields, and its Content-Type."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}


def pick_photos(catalog: Path, limit: int) -> tuple[list[Path], list[Path], list[Path]]:
    """(catalog photos to index, photos to add during the run, query photos).

    With watches-dev's manifest: packshots are the catalog (the first ``limit``; the next ones
    are added), lifestyle photos the queries. Otherwise every image of the folder, split alike,
    queries being catalog photos.
    """
    from simclr_watches.data.images import scan_images

    manifest = catalog.parent / "manifest.csv"
    if manifest.is_file():
        import csv

        rows = list(csv.DictReader(manifest.open()))
        packs = [catalog.parent / r["path"] for r in rows if r["kind"] == "packshot"]
        queries = [catalog.parent / r["path"] for r in rows if r["kind"] == "lifestyle"]
    else:
        packs = scan_images(catalog)
        queries = packs[:limit]
    return packs[:limit], packs[limit:], queries


def build(work: Path, photos: list[Path], device: str) -> Path:
    """The base index of ``photos`` in ``work/base`` (built once, reused when its catalog matches)."""
    from simclr_watches.retrieval.index import build_index

    base, listing = work / "base", work / "catalog.txt"
    names = "\n".join(str(p) for p in photos)
    if base.is_dir() and listing.is_file() and listing.read_text() == names:
        return base
    catalog = work / "catalog"
    shutil.rmtree(catalog, ignore_errors=True)
    catalog.mkdir(parents=True)
    for i, p in enumerate(photos):
        os.symlink(p.resolve(), catalog / f"{i:05d}{p.suffix}")
    t0 = time.perf_counter()
    build_index(catalog, base, device=device, force=True)
    listing.write_text(names)
    print(f"built {base} of {len(photos)} photos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return base


def start_server(index: Path, token: str, max_concurrent: int, device: str) -> tuple[subprocess.Popen, int]:
    """A ``serve`` process on a free port; returns it and the port once it answers."""
    cmd = [sys.executable, "-m", "simclr_watches", "serve", str(index), "--port", "0", "--enable-writes",
           "--max-concurrent", str(max_concurrent), "--device", device]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "SIMCLR_WATCHES_TOKEN": token})
    for line in proc.stderr:
        m = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
            return proc, int(m[1])
    sys.exit(f"serve did not start (exit {proc.wait()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalog", type=Path, default=DATA / "images")
    ap.add_argument("--limit", type=int, default=300, help="catalog photos indexed before the run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--add-every", type=float, default=3.0, help="seconds between two additions (one photo each)")
    ap.add_argument("--no-writes", action="store_true", help="search only: no additions, no compaction")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "serve_load")
    args = ap.parse_args()

    from simclr_watches.retrieval.update import compact

    catalog, extra, queries = pick_photos(args.catalog, args.limit)
    base = build(args.work, catalog, args.device)
    index = args.work / "run"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(base, index)
    token = secrets.token_urlsafe(24)
    proc, port = start_server(index, token, args.clients + 1, args.device)
    bodies = [multipart([q.read_bytes()], {"k": str(args.k)}) for q in queries]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock, stop = threading.Lock(), threading.Event()
    try:
        for body, ctype in bodies[:2]:  # warm up: first searches allocate the encoder's buffers
            request(port, "POST", "/api/search", body, {"Content-Type": ctype})
        before = memory(proc.pid)

        def client(seed: int) -> None:
            i = seed
            while not stop.is_set():
                body, ctype = bodies[i % len(bodies)]
                i += args.clients
                t0 = time.perf_counter()
                try:
                    status, _ = request(port, "POST", "/api/search", body, {"Content-Type": ctype})
                except OSError:
                    status = 0
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append((time.perf_counter() - t0) * 1000)

        adds = {"added": 0, "failed": 0}

        def adder() -> None:
            auth = {"Authorization": f"Bearer {token}"}
            for photo in extra:
                if stop.wait(args.add_every):
                    return
                body, ctype = multipart([photo.read_bytes()], {})
                status, _ = request(port, "POST", "/api/items", body, {"Content-Type": ctype, **auth})
                adds["added" if status == 201 else "failed"] += 1

        threads = [threading.Thread(target=client, args=(s,)) for s in range(args.clients)]
        if not args.no_writes:
            threads.append(threading.Thread(target=adder))
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        compaction = None
        if not args.no_writes:
            time.sleep(args.seconds / 2)
            t0 = time.perf_counter()
            report = compact(index)
            compaction = (time.perf_counter() - t0, report.compacted)
            time.sleep(max(0.0, args.seconds - (time.perf_counter() - t_start)))
        else:
            time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t_start
        after = memory(proc.pid)
        stats = json.loads(request(port, "GET", "/api/stats")[1])
    finally:
        proc.terminate()
        proc.wait(30)

    searches = sum(statuses.values())
    errors = searches - statuses.get(200, 0) + (0 if args.no_writes else adds["failed"])
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    print(f"| clients | seconds | searches | searches/s | errors | p50 ms | p99 ms | added | compaction | "
          f"RSS before → after (MiB) | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    comp = "none" if compaction is None else f"{compaction[0]:.1f} s" + ("" if compaction[1] else " (nothing to do)")
    print(f"| {args.clients} | {elapsed:.0f} | {searches} | {searches / elapsed:.1f} | {errors} | "
          f"{statistics.median(lat) if lat else float('nan'):.0f} | {p99:.0f} | "
          f"{0 if args.no_writes else adds['added']} | {comp} | {before['VmRSS']} → {after['VmRSS']} | {after['VmHWM']} |")
    print(f"statuses {statuses}; server: items {stats['items']}, added {stats['added']}, removed {stats['removed']}, "
          f"p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Packs a catalog's images as small copies for a lent GPU machine (simclr_watches.data.pack).

    python scripts/gpu/pack_data.py /work/shared/data/watches-dev/manifest.csv --kind packshot --out .gpu-data/watches

SOURCE is a manifest CSV (``path``, ``group_id``, ``kind`` columns; ``--kind`` keeps one kind) or a
folder of images; the copies keep the paths relative to the manifest's folder (or to the folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from simclr_watches.core.errors import SimclrWatchesError  # noqa: E402
from simclr_watches.data.manifest import load_items  # noqa: E402
from simclr_watches.data.pack import pack_images  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="manifest CSV or image folder")
    p.add_argument("--out", type=Path, required=True, help="folder of the copies")
    p.add_argument("--kind", default=None, help="keep only manifest rows of this kind (e.g. packshot)")
    p.add_argument("--side", type=int, default=256, help="longest side of a copy, px")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality")
    p.add_argument("--force", action="store_true", help="replace an earlier pack at --out")
    args = p.parse_args(argv)
    try:
        items = load_items(args.source, kind=args.kind)
        root = args.source.parent if args.source.suffix.lower() == ".csv" else args.source
        desc = pack_images([it.path for it in items], root, args.out, side=args.side, quality=args.quality,
                           force=args.force)
    except (SimclrWatchesError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"packed {desc['count']} images ({desc['bytes'] / 2**20:.1f} MiB, <= {args.side} px) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

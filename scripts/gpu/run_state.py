"""A run's training checkpoint as parts small enough to come back from a lent GPU machine, and back.

    python scripts/gpu/run_state.py pack runs/x/checkpoint.pt OUT/run      # state.json + state.partNN
    python scripts/gpu/run_state.py unpack .gpu-run runs/x/checkpoint.pt   # checked, then written

A thin shell over :mod:`simclr_watches.train.transport` (AdamW's moments travel in bfloat16).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from simclr_watches.core.errors import SimclrWatchesError  # noqa: E402
from simclr_watches.train.transport import pack_run_state, unpack_run_state  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="checkpoint.pt -> folder of parts")
    pk.add_argument("checkpoint", type=Path)
    pk.add_argument("out", type=Path)
    up = sub.add_parser("unpack", help="folder of parts -> checkpoint.pt")
    up.add_argument("parts", type=Path)
    up.add_argument("checkpoint", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            desc = pack_run_state(args.checkpoint, args.out)
            print(f"packed epoch {desc['epoch']} ({desc['bytes'] / 2**20:.1f} MiB, {desc['packed_bytes'] / 2**20:.1f} MiB "
                  f"compressed) as {len(desc['parts'])} parts into {args.out}")
        else:
            ckpt = unpack_run_state(args.parts, args.checkpoint)
            print(f"unpacked epoch {ckpt['epoch']}, step {ckpt['step']} into {args.checkpoint}")
    except (SimclrWatchesError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

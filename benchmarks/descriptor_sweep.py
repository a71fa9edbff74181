"""How the default's descriptor block was chosen: attribute agreement of ``watches-lite0-v1-ens`` + a weighted block.

For each synthetic catalog (``simclr-watches synth DIR --n 300 --seed S``) every image queries all
others by whole (catalog-cropped) image, as ``evaluate --protocol attributes`` does with a plain
method, and the share of its top 10 agreeing on each attribute is printed for: ImageNet Lite0 at
224 px (the reference to reach), the ensemble alone, and the ensemble with the GeM descriptor
(:func:`simclr_watches.model.descriptor.gem_descriptor`) of the ImageNet member's map after each
stage, power and weight asked for, cosine = (1 - w) ensemble + w descriptor.

    python benchmarks/descriptor_sweep.py runs/synth0/attributes.csv [more CSVs] \
        --stages 5,6,7 --powers 1,3,4 --weights 0.8,0.85,0.9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from simclr_watches.data.images import load_image
from simclr_watches.data.mask import CROP_MARGIN, crop_to_foreground
from simclr_watches.evaluation.protocols import identical, load_attributes
from simclr_watches.model import default_preprocessing
from simclr_watches.model.descriptor import gem_descriptor
from simclr_watches.weights import IMAGENET_LITE0, load_model


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csvs", nargs="+", type=Path)
    ap.add_argument("--stages", default="6", help="stages of Encoder.run_stages after which the map is taken")
    ap.add_argument("--powers", default="3")
    ap.add_argument("--weights", default="0.8,0.85,0.9")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stages = [int(s) for s in args.stages.split(",")]
    enc, info = load_model("watches-lite0-v1-ens")
    imagenet, imagenet_info = load_model(IMAGENET_LITE0)
    pre, v1, member = info.preprocessing, enc.members[0], enc.members[1]
    p224 = default_preprocessing("efficientnet_lite0")
    for csv in args.csvs:
        table = load_attributes(csv)
        ignore = identical(table.paths, table.paths)
        agree = {a: table.values[a][:, None] == table.values[a][None, :] for a in table.values}

        def agreement(sims: np.ndarray) -> str:
            top = np.argsort(-np.where(ignore, -np.inf, sims), axis=1, kind="stable")[:, :10]
            return " | ".join(f"{np.take_along_axis(agree[a], top, 1).mean():.3f}" for a in agree)

        photos = [load_image(p) for p in table.paths]
        x = pre.normalize(torch.stack([pre.to_uint8(crop_to_foreground(p, CROP_MARGIN)) for p in photos]))
        x224 = imagenet_info.preprocessing.normalize(torch.stack([p224.to_uint8(p.rgb) for p in photos]))
        with torch.inference_mode():
            ens = enc(x).numpy()
            ref = imagenet(x224).numpy()
            h = v1.run_stages(x, 0, enc.shared)
            maps = {s: member.run_stages(h, enc.shared, s) for s in stages}
        print(f"\n{csv}\n\n| variant | {' | '.join(agree)} |\n|---|{'---|' * len(agree)}")
        print(f"| ImageNet, 224 px, whole image | {agreement(ref @ ref.T)} |")
        print(f"| watches-lite0-v1-ens | {agreement(ens @ ens.T)} |")
        for s in stages:
            for p in _floats(args.powers):
                d = gem_descriptor(maps[s], p).numpy()
                for w in _floats(args.weights):
                    sims = (1 - w) * (ens @ ens.T) + w * (d @ d.T)
                    print(f"| + stage {s}, GeM {p:g}, weight {w:g} | {agreement(sims)} |", flush=True)


if __name__ == "__main__":
    main()

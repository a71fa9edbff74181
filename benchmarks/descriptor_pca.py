"""Does the default's descriptor block survive a PCA to 512 dimensions (the uncentred second moment)?

Fits the projection on the catalog-cropped embeddings of a catalog folder (``P`` = top 512
eigenvectors of ``V^T V / n``), then prints the share of each block's energy a projection keeps
(``|P P^T v|^2`` restricted to the block, over the catalog, and over each synthetic catalog given)
and the synthetic catalogs' top-10 attribute agreement with exact vectors and with projected ones.

    python benchmarks/descriptor_pca.py ../shared/data/watches-dev/images runs/synth1/attributes.csv
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch

from simclr_watches.data.images import scan_images
from simclr_watches.data.mask import CROP_MARGIN, crop_to_foreground
from simclr_watches.evaluation.protocols import identical, load_attributes
from simclr_watches.retrieval.embed import embed_paths
from simclr_watches.weights import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("catalog", type=Path)
    ap.add_argument("csvs", nargs="*", type=Path)
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc, info = load_model()
    d = info.meta["descriptor"]["dim"]
    view = functools.partial(crop_to_foreground, margin=CROP_MARGIN)

    def embed(paths):
        return embed_paths(enc, info.preprocessing, list(paths), progress=False, view=view, hash=False).vectors

    def kept(x: np.ndarray) -> str:
        y = x @ proj @ proj.T
        share = [(y[:, s] ** 2).sum() / (x[:, s] ** 2).sum() for s in (slice(0, -d), slice(-d, None))]
        return f"energy kept: ensemble block {share[0]:.3f}, descriptor block {share[1]:.3f}"

    v = embed(scan_images(args.catalog))
    _, vecs = np.linalg.eigh(v.T @ v / len(v))
    proj = vecs[:, ::-1][:, : args.dims]
    print(f"{args.catalog} ({len(v)} x {v.shape[1]}), PCA to {args.dims}: {kept(v)}")
    for csv in args.csvs:
        table = load_attributes(csv)
        x = embed(table.paths)
        ignore = identical(table.paths, table.paths)
        print(f"{csv}: {kept(x)}")
        for name, y in (("exact", x), (f"PCA-{args.dims}", x @ proj)):
            y = y / np.linalg.norm(y, axis=1, keepdims=True)
            top = np.argsort(-np.where(ignore, -np.inf, y @ y.T), axis=1, kind="stable")[:, :10]
            shares = {a: np.take_along_axis(table.values[a][:, None] == table.values[a][None, :], top, 1).mean()
                      for a in table.values}
            print(f"  {name}: " + ", ".join(f"{a} {s:.3f}" for a, s in shares.items()))


if __name__ == "__main__":
    main()

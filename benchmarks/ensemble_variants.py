"""How the default model was chosen: variants of `watches-lite0-v1` at search time, compared.

Every variant keeps the default search (catalog cropped to the watch, query localised with the
default windows and fusion) and changes only the embedding:

  v1                    the SimCLR checkpoint alone
  v1, query + mirror    each query region's embedding averaged with that of its mirror image
  v1, catalog + views   each catalog embedding averaged with 4 augmented views of it (milder SimCLR views)
  WiSE a                weight-space interpolation a * v1 + (1 - a) * ImageNet (Wortsman et al. 2022)
  v1 + w * block 3      v1 concatenated with the pooled output of block group 3 (weight w)
  v1 + w * ImageNet     output-space ensemble; w = 1 is `watches-lite0-v1-ens`, the default

on `catalog-photo` (real on-wrist photos) and on simulated `photo` queries of one severity.

    python benchmarks/ensemble_variants.py ../shared/data/watches-dev/manifest.csv [--severity medium]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simclr_watches.train.augment import AugmentConfig, SimCLRAugment  # noqa: E402
from simclr_watches.train.catalog_cache import _decode  # noqa: E402
from simclr_watches.data.images import load_image  # noqa: E402
from simclr_watches.evaluation.protocols import Task, catalog_photo_task, photo_tasks  # noqa: E402
from simclr_watches.retrieval.localize import LocalizeConfig, window_crops  # noqa: E402
from simclr_watches.retrieval.scoring import fuse_scores  # noqa: E402
from simclr_watches.data.mask import crop_box, crop_to_foreground  # noqa: E402
from simclr_watches.evaluation.metrics import score_rankings, summarize  # noqa: E402
from simclr_watches.model import Preprocessing  # noqa: E402
from simclr_watches.weights import IMAGENET_LITE0, load_model  # noqa: E402

WISE = (0.3, 0.5, 0.7)
VIEWS = 4
MILD_VIEWS = dict(crop_scale=(0.6, 1.0), small_paste_p=0.0, occlude_p=0.0, grayscale_p=0.0)


class Features:
    """Every embedding the variants need, from one pass per input batch."""

    def __init__(self):
        self.v1, info = load_model("watches-lite0-v1")
        self.pre = info.preprocessing
        inet, _ = load_model(IMAGENET_LITE0)
        self.models = {"v1": self.v1, "inet": inet}
        tuned, init = self.v1.state_dict(), inet.state_dict()
        for a in WISE:
            m = copy.deepcopy(self.v1)
            m.load_state_dict({k: a * v + (1 - a) * init[k] if v.is_floating_point() else v for k, v in tuned.items()})
            self.models[f"wise{a}"] = m.eval()
        self._block3: list[torch.Tensor] = []
        self.v1.backbone.blocks[3].register_forward_hook(lambda mod, i, out: self._block3.append(out))

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """(B, 3, S, S) uint8 -> name -> (B, D) unit vectors."""
        out: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(images), 64):
            x = self.pre.normalize(images[i : i + 64])
            self._block3.clear()
            for name, m in self.models.items():
                out.setdefault(name, []).append(m(x).numpy())
            out.setdefault("block3", []).append(F.normalize(self._block3[0].mean((2, 3)), dim=1).numpy())
            out.setdefault("v1_mirror", []).append(self.v1(x.flip(-1)).numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    @torch.inference_mode()
    def catalog_views(self, paths: list[Path]) -> np.ndarray:
        """(G, D): the mean v1 embedding of VIEWS augmented views of each catalog photo (seeded)."""
        decoded = [_decode(p, Preprocessing(size=256)) for p in paths]
        images = torch.stack([d[0] for d in decoded]).float() / 255
        masks = torch.stack([d[1] for d in decoded]).float()
        augment = SimCLRAugment(AugmentConfig(size=self.pre.size, **MILD_VIEWS))
        torch.manual_seed(0)
        total = 0
        for _ in range(VIEWS):
            views = torch.cat([augment.view(images[i : i + 64], masks[i : i + 64]) for i in range(0, len(images), 64)])
            total = total + self((views * 255).round().byte())["v1"]
        return total / VIEWS


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mix(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Concatenation of unit parts scaled by sqrt(weight): cosine = weighted mean of the parts' cosines."""
    return np.concatenate([np.sqrt(w) * parts[k] for k, w in weights.items()], -1) / np.sqrt(sum(weights.values()))


def variants(task: Task, feats: Features) -> dict[str, np.ndarray]:
    """Name -> (Q, G) fused scores of the default search with that embedding."""
    gallery = feats(torch.stack([feats.pre.to_uint8(crop_to_foreground(load_image(p))) for p in task.gallery]))
    gallery["v1_views"] = unit(gallery["v1"] + feats.catalog_views(task.gallery))
    gallery["v1_mirror"] = gallery["v1"]  # the mirror is a query-side change only
    regions = []
    for p in task.queries:
        photo = load_image(p)
        _, whole, crops = window_crops(photo.rgb, feats.pre, LocalizeConfig(), crop_box(photo))
        regions.append(feats(torch.cat([whole[None], crops])))
    for r in regions:
        r["v1_mirror"] = unit(r["v1"] + r["v1_mirror"])
        r["v1_views"] = r["v1"]
    table = {
        "v1": {"v1": 1.0},
        "v1, query + mirror": {"v1_mirror": 1.0},
        "v1, catalog + views": {"v1_views": 1.0},
        **{f"WiSE {a}": {f"wise{a}": 1.0} for a in WISE},
        **{f"v1 + {w} * block 3": {"v1": 1.0, "block3": w} for w in (0.25, 0.5)},
        **{f"v1 + {w} * ImageNet": {"v1": 1.0, "inet": w} for w in (0.25, 0.5, 1.0)},
    }
    return {name: np.stack([fuse_scores(mix(r, w) @ mix(gallery, w).T, LocalizeConfig().top_m)[0] for r in regions])
            for name, w in table.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, help="watches-dev manifest.csv (packshots + lifestyle photos)")
    ap.add_argument("--severity", default="medium", help="simulated photo severity")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    feats = Features()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [catalog_photo_task(args.manifest),
                 *photo_tasks(args.manifest.parent / "images", [args.severity], Path(tmp))]
        results = {t.name: {n: summarize(score_rankings(s, t.relevant, t.ignore)) for n, s in variants(t, feats).items()}
                   for t in tasks}
    names = list(next(iter(results.values())))
    print("| variant | " + " | ".join(f"{t} R@1 | R@10 | MRR" for t in results) + " |")
    print("|---|" + "---|---|---|" * len(results))
    for n in names:
        cells = [f"{results[t][n]['R@1']:.3f} | {results[t][n]['R@10']:.3f} | {results[t][n]['MRR']:.3f}" for t in results]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

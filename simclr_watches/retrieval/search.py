"""Search: embed query photos with the index's own model and return the nearest catalog items."""

from __future__ import annotations

import concurrent.futures as cf
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from simclr_watches.data.images import Photo, try_load_image
from simclr_watches.core.device import resolve_device
from simclr_watches.retrieval.embed import embed_paths
from simclr_watches.core.errors import CheckpointError, ImageReadError, SimclrWatchesError
from simclr_watches.retrieval.index import Index, load_index
from simclr_watches.data.mask import crop_box, crop_to_foreground
from simclr_watches.retrieval.localize import LocalizeConfig, embed_regions, fuse_scores, window_crops
from simclr_watches.weights import load_model

# Localised queries are decoded and cropped this many at a time: bounds memory, keeps batches full.
QUERY_CHUNK = 8


@dataclass(frozen=True)
class Hit:
    rank: int
    path: str
    score: float


@dataclass
class QueryResult:
    """The answer to one query; ``error`` says why a query could not be answered.

    ``box`` is the window ``[x0, y0, x1, y1]`` (pixels of the query as decoded) that
    matched the top result, when localisation was on.
    """

    query: str
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None
    box: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query}
        if self.box is not None:
            out["box"] = self.box
        out["results"] = [{"rank": h.rank, "path": h.path, "score": round(h.score, 6)} for h in self.hits]
        return out


class Searcher:
    """An index together with the encoder that built it.

    Args:
        index_dir: a folder written by ``build-index``.
        checkpoint: the model to embed queries with; default: the one recorded in the index.
            Either way its weights must be those the index was built with.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        localize: window layout for finding the watch in the query; None embeds whole images.
    """

    def __init__(self, index_dir: Path | str, checkpoint: str | None = None, device: str = "auto",
                 localize: LocalizeConfig | None = LocalizeConfig()):
        self.index: Index = load_index(index_dir)
        model_id = checkpoint or self.index.meta["model"]["id"]
        try:
            self.encoder, self.model = load_model(model_id)
        except CheckpointError as e:
            if checkpoint:
                raise
            raise CheckpointError(f"{e} (the model this index was built with; pass --checkpoint if it moved)") from None
        self.index.check_model(self.model)
        self.device = resolve_device(device)
        self.encoder = self.encoder.to(self.device).eval().to(memory_format=torch.channels_last)
        self.localize = localize
        self.vectors = self.index.vectors if localize else None  # read with the forest: the same build

    def search(self, queries: Sequence[tuple[str, Path]], top_k: int = 10, batch_size: int = 32,
               progress: bool = False) -> list[QueryResult]:
        """Answers ``(label, path)`` queries in input order; unreadable files get an error, not an exception."""
        if top_k < 1:
            raise SimclrWatchesError(f"top-k must be >= 1, got {top_k}")
        if self.localize is None:
            return self._search_whole(queries, top_k, batch_size, progress)
        results = []
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            for i in range(0, len(queries), QUERY_CHUNK):
                chunk = queries[i : i + QUERY_CHUNK]
                photos = list(pool.map(lambda q: try_load_image(q[1]), chunk))
                results.extend(self._search_localized(chunk, photos, top_k, batch_size))
        return results

    def _search_whole(self, queries, top_k, batch_size, progress) -> list[QueryResult]:
        margin = self.index.crop_margin
        view = None if margin is None else functools.partial(crop_to_foreground, margin=margin)
        emb = embed_paths(self.encoder, self.index.preprocessing, [p for _, p in queries], batch_size=batch_size,
                          device=self.device, progress=progress, label="queries", view=view)
        errors = {e.path: e.reason for e in emb.skipped}
        vectors = iter(emb.vectors)  # one row per readable query, in input order
        paths = self.index.paths
        results = []
        for label, path in queries:
            if path in errors:
                results.append(QueryResult(label, error=f"{path}: {errors[path]}"))
                continue
            ids, scores = self.index.query(next(vectors), top_k)
            results.append(QueryResult(label, [Hit(r + 1, paths[i], s) for r, (i, s) in enumerate(zip(ids, scores))]))
        return results

    def _search_localized(self, queries, photos: list[Photo | ImageReadError], top_k: int,
                          batch_size: int) -> list[QueryResult]:
        pre, cfg, margin = self.index.preprocessing, self.localize, self.index.crop_margin
        paths, results = self.index.paths, []
        for (label, _), photo in zip(queries, photos):
            if isinstance(photo, ImageReadError):
                results.append(QueryResult(label, error=str(photo)))
                continue
            bs, whole, crops = window_crops(photo.rgb, pre, cfg, None if margin is None else crop_box(photo, margin))
            vecs = embed_regions(self.encoder, pre, whole, crops, self.device, batch_size)
            # Annoy proposes candidates per region; fusion is then exact on the stored vectors.
            cand = sorted({i for v in vecs for i in self.index.ann.get_nns_by_vector(v.tolist(), cfg.candidates)})
            fused, best = fuse_scores(vecs @ self.vectors[cand].T, cfg.top_m)
            order = np.argsort(-fused, kind="stable")[:top_k]
            hits = [Hit(r + 1, paths[cand[j]], float(fused[j])) for r, j in enumerate(order)]
            results.append(QueryResult(label, hits, box=[int(v) for v in bs[best[order[0]]]]))
        return results

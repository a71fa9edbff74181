"""Search: embed query photos with the index's own model and return the nearest catalog items."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from simclr_watches.core.errors import CheckpointError, ImageReadError, SimclrWatchesError
from simclr_watches.data.mask import crop_to_foreground
from simclr_watches.core.device import resolve_device
from simclr_watches.retrieval.embed import embed_paths
from simclr_watches.retrieval.index import Index, load_index
from simclr_watches.retrieval.boxes import BoxScorer, BoxSearchConfig, box_or_windows
from simclr_watches.retrieval.localize import LocalizeConfig
from simclr_watches.retrieval.scoring import AnnoyCandidates, LocalizedScorer
from simclr_watches.weights import load_model

# How search finds the watch in a query photo (`search --locate`): the learnt box or multi-scale windows.
LOCATE_MODES = ("box", "windows")


def locate_config(mode: str, box_head: str | None = None) -> BoxSearchConfig | LocalizeConfig:
    """The localisation of a ``--locate`` mode: ``box`` (with ``box_head``, default the shipped head) or ``windows``.

    Raises:
        SimclrWatchesError: an unknown mode, or a box head given with windows.
    """
    if mode not in LOCATE_MODES:
        raise SimclrWatchesError(f"--locate must be one of {', '.join(LOCATE_MODES)}, got {mode!r}")
    if mode == "windows":
        if box_head is not None:
            raise SimclrWatchesError("--box-head needs --locate box")
        return LocalizeConfig()
    return BoxSearchConfig(head=box_head)


# A query: a photo's path (labelled by itself) or a (label, path) pair.
Query = Union[str, os.PathLike, tuple[str, Path]]


@dataclass(frozen=True)
class Hit:
    """One catalog item found: its 1-based rank, its path as indexed (absolute), its cosine similarity."""

    rank: int
    path: str
    score: float


@dataclass
class QueryResult:
    """The answer to one query; ``error`` says why a query could not be answered.

    Attributes:
        query: the query's label (its path as given, unless labelled otherwise).
        hits: the catalog items found, best first.
        error: why the query could not be answered (then ``hits`` is empty); None when it was.
        box: where the watch was found, ``[x0, y0, x1, y1]`` (pixels of the query as decoded),
            when localisation was on: the learnt box's region, or the window, that matched the
            top result best.
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


def _labelled(query: Query) -> tuple[str, Path]:
    """A query as ``(label, path)``: a plain path is labelled by itself."""
    if isinstance(query, (str, os.PathLike)):
        return str(query), Path(query)
    label, path = query
    return label, Path(path)


class Searcher:
    """An index together with the encoder that built it: what ``simclr-watches search`` runs.

    Example::

        searcher = Searcher("my-index")
        result = searcher.search_one("photo.jpg", top_k=5)
        best = result.hits[0].path

    Args:
        index_dir: a folder written by ``build-index`` (or :func:`simclr_watches.build_index`).
        checkpoint: the model to embed queries with; default: the one recorded in the index.
            Either way its weights must be those the index was built with.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        localize: how to find the watch in the query (docs/LOCALISATION.md): the learnt box
            (:class:`BoxSearchConfig`, the default; windows when the index's model is not the one
            the shipped box head reads) or windows (:class:`LocalizeConfig`); None embeds whole images.

    Raises:
        IndexFormatError: the folder is not a valid index, or was built with other weights.
        CheckpointError: the model cannot be loaded.
    """

    def __init__(self, index_dir: Path | str, checkpoint: str | None = None, device: str = "auto",
                 localize: BoxSearchConfig | LocalizeConfig | None = BoxSearchConfig()):
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
        self.localize, self.finder = localize, None
        if isinstance(localize, BoxSearchConfig):  # windows instead when the shipped head does not fit this model
            self.localize, self.finder = box_or_windows(localize, self.encoder, self.model, self.device)

    def search(self, queries: Sequence[Query] | Query, top_k: int = 10, batch_size: int = 32,
               progress: bool = False) -> list[QueryResult]:
        """Answers queries in input order; an unreadable file gets an error in its result, not an exception.

        Args:
            queries: photo paths (``str`` or ``Path``, each labelled by itself) or ``(label, path)``
                pairs; a single path is one query.
            top_k: results per query (at most the catalog's size).
            batch_size: images (or a photo's regions) per encoder pass.
            progress: a progress bar on stderr (whole-image search).

        Raises:
            SimclrWatchesError: ``top_k`` < 1.
        """
        if isinstance(queries, (str, os.PathLike)):
            queries = [queries]
        pairs = [_labelled(q) for q in queries]
        return [QueryResult(label, error=str(a)) if isinstance(a, ImageReadError) else a
                for (label, _), a in zip(pairs, self._answer(pairs, top_k, batch_size, progress))]

    def search_one(self, photo: str | os.PathLike, top_k: int = 10) -> QueryResult:
        """The ``top_k`` catalog items nearest to one photo, and where in it the watch was found.

        Args:
            photo: the query image file.

        Returns:
            ``.hits`` (``rank``, ``path``, ``score``), best first, and ``.box``.

        Raises:
            ImageReadError: the photo cannot be read or decoded.
            SimclrWatchesError: ``top_k`` < 1.
        """
        [answer] = self._answer([_labelled(photo)], top_k)
        if isinstance(answer, ImageReadError):
            raise answer
        return answer

    def _answer(self, queries: list[tuple[str, Path]], top_k: int, batch_size: int = 32,
                progress: bool = False) -> list[QueryResult | ImageReadError]:
        """A result per query, in order, or the ImageReadError that kept a query unanswered."""
        if top_k < 1:
            raise SimclrWatchesError(f"top-k must be >= 1, got {top_k}")
        search = self._search_whole if self.localize is None else self._search_localized
        return search(queries, top_k, batch_size, progress)

    def _search_whole(self, queries: list[tuple[str, Path]], top_k: int, batch_size: int,
                      progress: bool) -> list[QueryResult | ImageReadError]:
        margin = self.index.crop_margin
        view = None if margin is None else functools.partial(crop_to_foreground, margin=margin)
        emb = embed_paths(self.encoder, self.index.preprocessing, [p for _, p in queries], batch_size=batch_size,
                          device=self.device, progress=progress, label="queries", view=view, hash=False)
        errors = {e.path: e for e in emb.skipped}
        vectors = iter(emb.vectors)  # one row per readable query, in input order
        paths = self.index.paths
        results: list[QueryResult | ImageReadError] = []
        for label, path in queries:
            if path in errors:
                results.append(errors[path])
                continue
            ids, scores = self.index.query(next(vectors), top_k)
            results.append(QueryResult(label, [Hit(r + 1, paths[i], s) for r, (i, s) in enumerate(zip(ids, scores))]))
        return results

    def _search_localized(self, queries: list[tuple[str, Path]], top_k: int, batch_size: int,
                          progress: bool) -> list[QueryResult | ImageReadError]:
        cfg, paths = self.localize, self.index.paths
        candidates = AnnoyCandidates(self.index.ann, cfg.candidates)
        if self.finder is not None:
            scorer = BoxScorer(self.finder, self.index.preprocessing, self.index.vectors, candidates, cfg,
                               self.index.crop_margin, self.device)
        else:
            scorer = LocalizedScorer(self.encoder, self.index.preprocessing, self.index.vectors, candidates, cfg,
                                     self.index.crop_margin, self.device, batch_size)
        results: list[QueryResult | ImageReadError] = []
        for (label, _), scored in zip(queries, scorer.score_files(p for _, p in queries)):
            if isinstance(scored, ImageReadError):
                results.append(scored)
                continue
            order = scored.scores.ranking(top_k)
            hits = [Hit(r + 1, paths[scored.scores.ids[j]], float(scored.scores.scores[j])) for r, j in enumerate(order)]
            results.append(QueryResult(label, hits, box=scored.box(order[0])))
        return results

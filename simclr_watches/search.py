"""Search: embed query photos with the index's own model and return the nearest catalog items."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from simclr_watches.embed import embed_paths, resolve_device
from simclr_watches.errors import CheckpointError, SimclrWatchesError
from simclr_watches.index import Index, load_index
from simclr_watches.weights import load_model


@dataclass(frozen=True)
class Hit:
    rank: int
    path: str
    score: float


@dataclass
class QueryResult:
    """The answer to one query; ``error`` says why a query could not be answered."""

    query: str
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "results": [{"rank": h.rank, "path": h.path, "score": round(h.score, 6)} for h in self.hits]}


class Searcher:
    """An index together with the encoder that built it.

    Args:
        index_dir: a folder written by ``build-index``.
        checkpoint: the model to embed queries with; default: the one recorded in the index.
            Either way its weights must be those the index was built with.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
    """

    def __init__(self, index_dir: Path | str, checkpoint: str | None = None, device: str = "auto"):
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

    def search(self, queries: Sequence[tuple[str, Path]], top_k: int = 10, batch_size: int = 32,
               progress: bool = False) -> list[QueryResult]:
        """Answers ``(label, path)`` queries in input order; unreadable files get an error, not an exception."""
        if top_k < 1:
            raise SimclrWatchesError(f"top-k must be >= 1, got {top_k}")
        emb = embed_paths(self.encoder, self.index.preprocessing, [p for _, p in queries], batch_size=batch_size,
                          device=self.device, progress=progress, label="queries")
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

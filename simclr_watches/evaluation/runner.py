"""Runs retrieval methods on evaluation tasks and collects what they scored.

A task (:class:`simclr_watches.evaluation.protocols.Task`) says which files query which
gallery and what is relevant; a method (:class:`simclr_watches.evaluation.baselines.Method`)
scores the queries against the gallery; :func:`run_task` turns those scores into the
metrics of :mod:`simclr_watches.evaluation.metrics`. Reporting (tables, plot, HTML)
lives in :mod:`simclr_watches.evaluation.report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.method import Method
from simclr_watches.evaluation.metrics import recall_curve, score_rankings, summarize
from simclr_watches.evaluation.protocols import Task, identical, leaks, load_attributes


@dataclass
class MethodResult:
    """One method on one task: summary metrics, Recall@k curve, and what the worst queries got."""

    summary: dict[str, float]
    curve: list[float]
    seconds: float
    first_hit: np.ndarray = field(repr=False)
    top: np.ndarray = field(repr=False)  # (Q, 5) gallery indices of the first results, ignored items skipped


def _top_results(scores: np.ndarray, ignore: np.ndarray, n: int = 5) -> np.ndarray:
    """(Q, n) gallery indices of each query's best scores, ignored items skipped; ties keep gallery order."""
    s = np.where(ignore, -np.inf, scores)
    return np.argsort(-s, axis=1, kind="stable")[:, :n]


def run_task(task: Task, method: Method) -> MethodResult:
    """Scores one task with one method.

    Raises:
        SimclrWatchesError: the task would let a query find itself.
    """
    bad = leaks(task)
    if bad:
        raise SimclrWatchesError(f"task {task.name}: query {bad[0][0]} is also in the gallery as {bad[0][1]}")
    t0 = time.perf_counter()
    scores = method.score_queries(task.queries, method.embed_gallery(task.gallery))
    seconds = time.perf_counter() - t0
    m = score_rankings(scores, task.relevant, task.ignore)
    return MethodResult(summarize(m), recall_curve(m, 20).tolist(), seconds, m.first_hit,
                        _top_results(scores, task.ignore))


@dataclass
class Report:
    """Results of every method on every task of one protocol run."""

    protocol: str
    data: str
    seed: int
    tasks: list[Task]
    results: dict[str, dict[str, MethodResult]]  # task name -> method name -> result

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "data": self.data,
            "seed": self.seed,
            "tasks": {
                t.name: {
                    "queries": len(t.queries),
                    "gallery": len(t.gallery),
                    "methods": {name: {**r.summary, "seconds": round(r.seconds, 2), "recall_curve": r.curve}
                                for name, r in self.results[t.name].items()},
                }
                for t in self.tasks
            },
        }


def run(protocol: str, tasks: list[Task], methods: Sequence[Method], data: str, seed: int = 0) -> Report:
    """Runs every method on every task (a method's embeddings are reused across its tasks)."""
    results: dict[str, dict[str, MethodResult]] = {t.name: {} for t in tasks}
    for method in methods:
        for t in tasks:
            results[t.name][method.name] = run_task(t, method)
    return Report(protocol, data, seed, tasks, results)


def attribute_agreement(csv_path: Path, methods: Sequence[Method], k: int = 10,
                        columns: Sequence[str] | None = None) -> dict:
    """Share of each query's top-k results that agree with it on each attribute.

    Every image of the CSV (see :func:`simclr_watches.evaluation.protocols.load_attributes`)
    queries all others; itself and byte-identical copies are excluded. Ties keep CSV order.
    A query with an empty value is skipped for that attribute; a result with an
    empty value disagrees. ``chance`` is the same share for a random ranking:
    the mean share of the other images that agree with the query.

    Returns:
        ``{"k": k, "queries": n, "attributes": [...], "methods": {name: {attr: share}}, "chance": {attr: share}}``.

    Raises:
        SimclrWatchesError: missing columns or images, unknown attribute column.
    """
    table = load_attributes(csv_path, columns)
    paths, values = table.paths, table.values
    attrs = list(values)
    ignore = identical(paths, paths)
    agree = {a: (values[a][:, None] == values[a][None, :]) & (values[a][None, :] != "") for a in attrs}
    has = {a: values[a] != "" for a in attrs}
    others = np.maximum((~ignore).sum(1), 1)
    out = {"k": k, "queries": len(paths), "attributes": attrs, "methods": {},
           "chance": {a: float(((agree[a] & ~ignore).sum(1) / others)[has[a]].mean()) for a in attrs}}
    for method in methods:
        emb = method.embed_gallery(paths)
        top = _top_results(method.score_queries(paths, emb), ignore, k)
        out["methods"][method.name] = {
            a: float(np.take_along_axis(agree[a], top, 1).mean(1)[has[a]].mean()) for a in attrs
        }
    return out

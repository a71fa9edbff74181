"""Retrieval metrics on rankings: Recall@k, AP@k / mAP@k, MRR and the UKBench N-S score.

A query's result is turned into a *relevance ranking*: a boolean vector, best
result first, True where the result is relevant. Gallery items the protocol
*ignores* for that query (the query itself, a byte-identical copy, a colour
variant of the same model in another group) are removed before ranking, so they
are neither hits nor misses and do not push later results down.

Tie rule (pessimistic): among gallery items with exactly equal scores, the
non-relevant ones are ranked first. A method that cannot tell items apart (a
perceptual hash gives few distinct Hamming distances, a constant embedding gives
one) therefore gets no credit from the gallery's order. The rule is
deterministic and independent of the gallery order; within the same relevance,
ties keep gallery order.

All metrics here are per query; :func:`summarize` averages them over the
queries that have at least one relevant item (mean over queries: mAP, MRR, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simclr_watches.core.errors import SimclrWatchesError


def relevance_ranking(scores: np.ndarray, relevant: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Ranks a gallery for one query and returns the relevance of each rank.

    Args:
        scores: (G,) similarities, higher is better.
        relevant: (G,) bool, True for the query's relevant gallery items.
        ignore: (G,) bool or None, items removed from the ranking before it is scored.

    Returns:
        (G',) bool, G' = number of items not ignored; element i is True when the
        item at rank i + 1 is relevant. Ties are broken pessimistically (see module doc).
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 1:
        raise SimclrWatchesError(f"scores {scores.shape} and relevant {relevant.shape} must be equal 1-D shapes")
    keep = np.ones_like(relevant) if ignore is None else ~np.asarray(ignore, dtype=bool)
    s, r = scores[keep], relevant[keep]
    # np.lexsort sorts by the last key first: score descending, then non-relevant (False) before relevant.
    order = np.lexsort((r, -s))
    return r[order]


def first_hit_rank(ranking: np.ndarray) -> int | None:
    """1-based rank of the first relevant item, or None when nothing relevant was ranked."""
    hits = np.flatnonzero(ranking)
    return int(hits[0]) + 1 if hits.size else None


def recall_at_k(ranking: np.ndarray, k: int) -> float:
    """Recall@k as a hit rate: 1 when a relevant item is among the first k, else 0.

    .. math:: R@k = \\mathbb{1}[\\exists\\, i \\le k : rel_i]

    This is the instance-retrieval convention (e.g. Song et al., "Deep Metric
    Learning via Lifted Structured Feature Embedding", CVPR 2016); averaged over
    queries it is the share of queries answered within the top k.
    """
    return float(bool(np.any(ranking[:k])))


def average_precision_at_k(ranking: np.ndarray, k: int, n_relevant: int) -> float:
    """AP@k, normalised by the number of relevant items that can fit in the top k.

    .. math:: AP@k = \\frac{1}{\\min(R, k)} \\sum_{i=1}^{k} P(i)\\, rel_i,
              \\qquad P(i) = \\frac{1}{i}\\sum_{j \\le i} rel_j

    with R = ``n_relevant`` (relevant items not ignored). Dividing by min(R, k)
    rather than R keeps groups of different sizes comparable: a perfect top k
    scores 1 whether the group has 2 or 24 members.

    Returns:
        AP@k in [0, 1]; 0 when ``n_relevant`` is 0.
    """
    if n_relevant <= 0:
        return 0.0
    top = np.asarray(ranking[:k], dtype=np.float64)
    precision = np.cumsum(top) / np.arange(1, top.size + 1)
    return float(np.sum(precision * top) / min(n_relevant, k))


def reciprocal_rank(ranking: np.ndarray) -> float:
    """1 / rank of the first relevant item (0 when none is ranked); its mean is the MRR.

    .. math:: RR = 1 / \\min\\{i : rel_i\\}
    """
    rank = first_hit_rank(ranking)
    return 1.0 / rank if rank else 0.0


def ns_score(ranking: np.ndarray, k: int = 4, count_self: bool = True) -> float:
    """The UKBench N-S score: relevant items among the top k (Nistér & Stewénius, CVPR 2006).

    In UKBench each object has 4 photos, the query is itself in the database
    and the score is how many of its 4 photos are in the top 4 (max 4). Our
    rankings exclude the query, so with ``count_self`` the query counts as its
    own first result, as it does in UKBench, and the other top k - 1 ranks are
    searched:

    .. math:: NS = 1 + \\sum_{i=1}^{k-1} rel_i \\quad (\\text{count\\_self}),
              \\qquad NS = \\sum_{i=1}^{k} rel_i \\quad (\\text{otherwise})

    For groups larger than 4 (COIL-100 has 24 views) the score is still out of
    4; for groups smaller than 4 its maximum is the group size.
    """
    if count_self:
        return 1.0 + float(np.sum(ranking[: k - 1]))
    return float(np.sum(ranking[:k]))


@dataclass(frozen=True)
class QueryMetrics:
    """Per-query metrics of a (Q, G) score matrix; arrays have shape (Q,).

    Attributes:
        recall: {k: (Q,) 0/1 hit at k}.
        ap10: (Q,) AP@10.
        rr: (Q,) reciprocal rank.
        ns: (Q,) N-S score over the top 4 (query counted as its own first result).
        first_hit: (Q,) 1-based rank of the first relevant item, 0 when none.
        n_relevant: (Q,) relevant gallery items per query (after ignoring).
        ranked: (Q,) number of gallery items ranked per query (after ignoring).
    """

    recall: dict[int, np.ndarray]
    ap10: np.ndarray
    rr: np.ndarray
    ns: np.ndarray
    first_hit: np.ndarray
    n_relevant: np.ndarray
    ranked: np.ndarray


def score_rankings(
    scores: np.ndarray, relevant: np.ndarray, ignore: np.ndarray | None = None, ks: tuple[int, ...] = (1, 5, 10)
) -> QueryMetrics:
    """Computes every per-query metric for a score matrix.

    Args:
        scores: (Q, G) similarities.
        relevant: (Q, G) bool.
        ignore: (Q, G) bool or None.
        ks: cut-offs for Recall@k.
    """
    scores, relevant = np.asarray(scores), np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise SimclrWatchesError(f"scores {scores.shape} and relevant {relevant.shape} must be equal 2-D shapes")
    ignore = np.zeros_like(relevant) if ignore is None else np.asarray(ignore, dtype=bool)
    q = scores.shape[0]
    recall = {k: np.zeros(q) for k in ks}
    ap10, rr, ns, first, n_rel, ranked = (np.zeros(q) for _ in range(6))
    for i in range(q):
        ranking = relevance_ranking(scores[i], relevant[i], ignore[i])
        n_rel[i] = ranking.sum()
        ranked[i] = ranking.size
        for k in ks:
            recall[k][i] = recall_at_k(ranking, k)
        ap10[i] = average_precision_at_k(ranking, 10, int(n_rel[i]))
        rr[i] = reciprocal_rank(ranking)
        ns[i] = ns_score(ranking)
        first[i] = first_hit_rank(ranking) or 0
    return QueryMetrics(recall, ap10, rr, ns, first.astype(int), n_rel.astype(int), ranked.astype(int))


def summarize(m: QueryMetrics) -> dict[str, float]:
    """Means over the queries that have at least one relevant item.

    Returns:
        ``{"R@k": ..., "mAP@10": ..., "MRR": ..., "N-S": ..., "queries": n, "queries_without_relevant": n0}``.
    """
    valid = m.n_relevant > 0
    n = int(valid.sum())

    def mean(a: np.ndarray) -> float:
        return float(a[valid].mean()) if n else float("nan")

    out = {f"R@{k}": mean(v) for k, v in m.recall.items()}
    out.update({"mAP@10": mean(m.ap10), "MRR": mean(m.rr), "N-S": mean(m.ns)})
    out.update({"queries": n, "queries_without_relevant": int((~valid).sum())})
    return out


def recall_curve(m: QueryMetrics, max_k: int = 20) -> np.ndarray:
    """(max_k,) Recall@k for k = 1..max_k, from the first-hit ranks (queries with a relevant item)."""
    valid = m.n_relevant > 0
    first = m.first_hit[valid]
    if first.size == 0:
        return np.full(max_k, np.nan)
    ks = np.arange(1, max_k + 1)
    return ((first[None, :] > 0) & (first[None, :] <= ks[:, None])).mean(axis=1)

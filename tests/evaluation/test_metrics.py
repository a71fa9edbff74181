"""Metrics on hand-made rankings with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from simclr_watches.core.errors import SimclrWatchesError
from simclr_watches.evaluation.metrics import (
    average_precision_at_k,
    first_hit_rank,
    ns_score,
    recall_at_k,
    recall_curve,
    reciprocal_rank,
    relevance_ranking,
    score_rankings,
    summarize,
)

T, F = True, False


def test_ranking_orders_by_score_and_drops_ignored():
    scores = np.array([0.9, 0.1, 0.8, 0.5])
    relevant = np.array([F, T, F, T])
    ignore = np.array([T, F, F, F])
    # 0.9 is ignored; left: 0.8 (F), 0.5 (T), 0.1 (T)
    assert relevance_ranking(scores, relevant, ignore).tolist() == [F, T, T]


def test_ties_are_pessimistic_whatever_the_gallery_order():
    for relevant in ([T, F, F], [F, F, T], [F, T, F]):
        ranking = relevance_ranking(np.array([0.5, 0.5, 0.5]), np.array(relevant))
        assert ranking.tolist() == [F, F, T]
        assert first_hit_rank(ranking) == 3
    # A tie only reorders within equal scores: a higher relevant score still wins.
    assert relevance_ranking(np.array([0.4, 0.7, 0.4]), np.array([F, T, F])).tolist() == [T, F, F]


def test_ranking_rejects_mismatched_shapes():
    with pytest.raises(SimclrWatchesError):
        relevance_ranking(np.zeros(3), np.zeros(4, bool))


def test_recall_at_k_is_a_hit_rate():
    ranking = np.array([F, F, T, T])
    assert [recall_at_k(ranking, k) for k in (1, 2, 3, 10)] == [0.0, 0.0, 1.0, 1.0]
    assert recall_at_k(np.array([F, F]), 5) == 0.0


@pytest.mark.parametrize(
    "ranking, n_relevant, k, expected",
    [
        ([T, F, T, F], 2, 10, (1 + 2 / 3) / 2),  # two relevant at ranks 1 and 3
        ([F, T], 1, 10, 0.5),  # a pair: one relevant at rank 2
        ([F, T, T, T], 3, 10, (1 / 2 + 2 / 3 + 3 / 4) / 3),  # group of 4 (3 others)
        ([T] * 10 + [F] * 13 + [T], 23, 10, 1.0),  # group of 24: a full top 10 is perfect
        ([T, T] + [F] * 8, 23, 10, 2 / 10),  # group of 24, only 2 in the top 10
        ([F] * 10 + [T], 1, 10, 0.0),  # relevant just past the cut-off
        ([F, F], 0, 10, 0.0),  # nothing relevant
    ],
)
def test_average_precision_at_k(ranking, n_relevant, k, expected):
    assert average_precision_at_k(np.array(ranking), k, n_relevant) == pytest.approx(expected)


def test_reciprocal_rank():
    assert reciprocal_rank(np.array([F, F, T, T])) == pytest.approx(1 / 3)
    assert reciprocal_rank(np.array([T])) == 1.0
    assert reciprocal_rank(np.array([F, F])) == 0.0


def test_ns_score_counts_self_like_ukbench():
    ranking = np.array([T, F, T, T, T])
    assert ns_score(ranking) == 3.0  # self + ranks 1 and 3
    assert ns_score(ranking, count_self=False) == 3.0  # ranks 1, 3, 4
    assert ns_score(np.array([T, T, T])) == 4.0  # perfect UKBench group of 4
    assert ns_score(np.array([T, F, F, F])) == 2.0  # a pair: max is its size, 2
    assert ns_score(np.array([F, F, F, T])) == 1.0


def test_score_rankings_and_summary_on_a_matrix():
    scores = np.array(
        [
            [0.9, 0.8, 0.1, 0.3],  # relevant {1}: rank 2
            [0.2, 0.2, 0.2, 0.2],  # relevant {0, 3}, all tied: pessimistic ranks 3 and 4
            [0.5, 0.4, 0.3, 0.2],  # no relevant item: left out of the means
        ]
    )
    relevant = np.array([[F, T, F, F], [T, F, F, T], [F, F, F, F]])
    ignore = np.array([[T, F, F, F], [F, F, F, F], [F, F, F, F]])
    m = score_rankings(scores, relevant, ignore)
    # Query 0 with item 0 ignored: ranking [T, F, F] -> first hit at 1.
    assert m.first_hit.tolist() == [1, 3, 0]
    assert m.n_relevant.tolist() == [1, 2, 0]
    assert m.ranked.tolist() == [3, 4, 4]
    s = summarize(m)
    assert s["queries"] == 2 and s["queries_without_relevant"] == 1
    assert s["R@1"] == pytest.approx(0.5)
    assert s["R@5"] == pytest.approx(1.0)
    assert s["MRR"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["mAP@10"] == pytest.approx((1 + (1 / 3 + 2 / 4) / 2) / 2)
    assert s["N-S"] == pytest.approx((2 + 2) / 2)  # q0: self + rank 1; q1: self + rank 3
    assert recall_curve(m, 4).tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])

"""The numpy metrics shared by training and the sidecar, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from finscore.models.evaluation import (
    accuracy,
    average_precision,
    card_precision_at_k,
    macro_f1,
    roc_auc,
)

Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])


def test_roc_auc_counts_correctly_ordered_pairs_and_half_credits_ties() -> None:
    assert roc_auc(Y, S) == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs ordered right
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert roc_auc([1, 0], [0.0, 1.0]) == 0.0
    assert np.isnan(roc_auc([0, 0], [0.1, 0.2]))


def test_average_precision_is_the_step_sum_scikit_learn_computes() -> None:
    # thresholds 0.8: P=1, R=.5; 0.4: P=.5, R=.5; 0.35: P=2/3, R=1 -> .5*1 + .5*2/3
    assert average_precision(Y, S) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a tie between a fraud and a non-fraud at the top counts as one threshold: P=.5, R=1
    assert average_precision([1, 0], [0.7, 0.7]) == pytest.approx(0.5)
    assert average_precision([0, 1, 1], [0.1, 0.9, 0.8]) == pytest.approx(1.0)


def test_card_precision_takes_each_cards_max_and_drops_cards_already_detected() -> None:
    day = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    card = np.array([1, 1, 2, 3, 4, 1, 2, 3, 4])
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0])
    score = np.array([0.9, 0.1, 0.8, 0.2, 0.1, 0.99, 0.5, 0.4, 0.3])
    # day 0, k=2: cards by max score 1 (0.9, compromised), 2 (0.8, not) -> 1/2; card 1 detected.
    # day 1: card 1 is removed; top 2 of {2: .5 (fraud), 3: .4, 4: .3} -> 2 and 3 -> 1/2.
    assert card_precision_at_k(day, card, y, score, k=2) == pytest.approx(0.5)
    # k larger than the cards of a day: the denominator stays k (the handbook's definition).
    assert card_precision_at_k(day, card, y, score, k=10) == pytest.approx((2 / 10 + 1 / 10) / 2)


def test_accuracy_and_macro_f1() -> None:
    y, pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])
    assert accuracy(y, pred) == 0.75
    # F1: class 0 = 1, class 1 = 0, class 2 = 2*2/(4+1+0) = 0.8
    assert macro_f1(y, pred) == pytest.approx((1 + 0 + 0.8) / 3)

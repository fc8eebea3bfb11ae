"""The accuracy matrix's numbers, on a hand-made matrix worked out by hand."""

from __future__ import annotations

import pytest

from tunelab.continual import matrix
from tunelab.errors import ConfigError

# R[i][j]: score on stage j after training stage i; B: scores before any training
R = [[0.9, 0.1, 0.2],
     [0.7, 0.8, 0.3],
     [0.6, 0.5, 0.95]]
B = [0.5, 0.2, 0.25]


def test_average_accuracy_is_the_mean_of_the_last_row() -> None:
    assert matrix.average_accuracy(R) == pytest.approx((0.6 + 0.5 + 0.95) / 3)


def test_backward_transfer_compares_each_stage_with_itself_just_after_training() -> None:
    # stage 0: 0.6 - 0.9 = -0.3; stage 1: 0.5 - 0.8 = -0.3; the last stage does not count
    assert matrix.backward_transfer(R) == pytest.approx(-0.3)


def test_forward_transfer_compares_with_the_untrained_score() -> None:
    # stage 1 before it trained: 0.1 vs 0.2 -> -0.1; stage 2: 0.3 vs 0.25 -> +0.05
    assert matrix.forward_transfer(R, B) == pytest.approx(-0.025)


def test_forgetting_is_the_drop_from_the_best_earlier_score() -> None:
    # stage 0: max(0.9, 0.7) - 0.6 = 0.3; stage 1: 0.8 - 0.5 = 0.3
    assert matrix.forgetting(R) == pytest.approx(0.3)
    rising = [[0.5, 0.0], [0.7, 0.9]]  # a stage that improved later forgot nothing
    assert matrix.forgetting(rising) == pytest.approx(-0.2)
    assert matrix.backward_transfer(rising) == pytest.approx(0.2)


def test_partial_rows_score_the_stages_seen_so_far() -> None:
    after_two = matrix.partial(R[:2])
    assert after_two["average_accuracy"] == pytest.approx((0.7 + 0.8) / 2)
    assert after_two["bwt"] == pytest.approx(0.7 - 0.9)
    assert matrix.partial(R[:1]) == {"average_accuracy": pytest.approx(0.9), "bwt": None}


def test_one_stage_has_no_transfer_and_a_ragged_matrix_is_refused() -> None:
    s = matrix.summary([[0.8]], [0.5])
    assert (s["bwt"], s["fwt"], s["forgetting"]) == (None, None, None)
    assert s["average_accuracy"] == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="T rows of T scores"):
        matrix.backward_transfer([[0.9, 0.1], [0.5]])
    with pytest.raises(ConfigError, match="baseline"):
        matrix.forward_transfer(R, [0.5])

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dklscope.policies import ExpectedImprovement, RandomChoice


def closed_form_ei(mean, std, best_f):
    z = (mean - best_f) / std
    return (mean - best_f) * norm.cdf(z) + std * norm.pdf(z)


def test_expected_improvement_matches_the_closed_form(known_model):
    mean = np.array([0.0, 1.0, 0.5, 2.0, 1.5])
    std = np.array([1.0, 0.1, 2.0, 0.3, 0.5])
    best_f = 1.2
    candidates = torch.tensor(np.stack([mean, std], axis=1))
    measured = np.zeros(5, dtype=bool)
    decision = ExpectedImprovement().choose(
        known_model, candidates, measured, best_f, np.random.default_rng(0)
    )
    expected = closed_form_ei(mean, std, best_f)
    assert decision.index == int(np.argmax(expected))
    assert decision.acquisition_value == pytest.approx(expected.max(), rel=1e-6)
    assert decision.predicted_mean == pytest.approx(mean[decision.index])
    assert decision.predicted_std == pytest.approx(std[decision.index])


def test_expected_improvement_skips_measured_candidates(known_model):
    mean = np.array([3.0, 2.0, 1.0])
    candidates = torch.tensor(np.stack([mean, np.full(3, 0.5)], axis=1))
    measured = np.array([True, False, False])
    decision = ExpectedImprovement().choose(
        known_model, candidates, measured, 0.0, np.random.default_rng(0)
    )
    assert decision.index == 1


def test_expected_improvement_ranks_far_below_the_incumbent(known_model):
    # Plain EI underflows to exactly 0 for all of these; the ranking must still follow it.
    mean = np.array([-40.0, -30.0, -35.0])
    candidates = torch.tensor(np.stack([mean, np.ones(3)], axis=1))
    decision = ExpectedImprovement(batch_size=2).choose(
        known_model, candidates, np.zeros(3, dtype=bool), 0.0, np.random.default_rng(0)
    )
    assert decision.index == 1
    assert 0.0 <= decision.acquisition_value < 1e-100


def test_random_choice_never_repeats_and_covers_the_rest():
    measured = np.zeros(6, dtype=bool)
    measured[[0, 2]] = True
    rng = np.random.default_rng(3)
    picks = {
        RandomChoice().choose(None, torch.zeros(6, 1), measured, 0.0, rng).index for _ in range(200)
    }
    assert picks == {1, 3, 4, 5}
    assert math.isnan(
        RandomChoice().choose(None, torch.zeros(6, 1), measured, 0.0, rng).acquisition_value
    )

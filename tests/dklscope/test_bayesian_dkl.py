"""The Bayesian DKL: learns, is a proper mixture, resumes exactly, leaves Pyro's store alone."""

import numpy as np
import pyro
import pytest
import torch

from dklscope.model.bayesian_dkl import BayesianDKLLearner
from dklscope.model.dkl import posterior_mean_std
from dklscope.model.ensemble import DKLEnsemble


def data(n, seed):
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.uniform(-1, 1, size=(n, 4)))
    y = 10.0 * (torch.sin(3 * X[:, 0]) + X[:, 1])
    return X, y


@pytest.mark.slow
def test_learns_with_honest_intervals_and_resumes_exactly():
    X, y = data(60, seed=0)
    Xt, yt = data(300, seed=1)
    store = dict(pyro.get_param_store().items())
    learner = BayesianDKLLearner(4, hidden=(16,), first_fit_iterations=150, seed=0)
    learner.fit(X[:50], y[:50])
    again = BayesianDKLLearner(4, hidden=(16,), first_fit_iterations=150, seed=0)
    again.load_state_bytes(learner.state_bytes())
    model, copy = learner.fit(X, y), again.fit(X, y)
    assert isinstance(model, DKLEnsemble) and model.n_members == learner.n_samples
    mean, std = posterior_mean_std(model, Xt)
    np.testing.assert_array_equal(mean, posterior_mean_std(copy, Xt)[0])
    assert np.corrcoef(mean, yt.numpy())[0, 1] > 0.95
    assert np.mean(np.abs(mean - yt.numpy()) <= 1.96 * std) > 0.85
    # The last layer's draws are distinct members, which disagree.
    with torch.no_grad():
        mu, _ = model.member_marginals(Xt[:20])
    assert float(mu.std(0).mean()) > 1e-3
    assert dict(pyro.get_param_store().items()).keys() == store.keys()

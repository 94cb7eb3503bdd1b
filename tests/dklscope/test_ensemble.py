"""The DKL ensemble: its mixture posterior against closed form, identical members, learning."""

import numpy as np
import pytest
import torch

from dklscope.model.dkl import posterior_mean_std
from dklscope.model.ensemble import BatchedMLP, DKLEnsemble, EnsembleLearner
from dklscope.model.loo import leave_one_out


def data(n, seed):
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.uniform(-1, 1, size=(n, 5)))
    y = 100.0 * (torch.sin(3 * X[:, 0]) + X[:, 1]) + 40.0
    return X, y


def ensemble(members=3, seed=0, identical=False, n=30):
    X, y = data(n, seed)
    network = BatchedMLP(members, 5, (16,), 2, seed=seed).double()
    if identical:
        with torch.no_grad():
            for p in [*network.weights, *network.biases]:
                p[:] = p[0]
    weights = torch.ones(members, n, dtype=torch.float64)
    model = DKLEnsemble(X, y, network, weights)
    with torch.no_grad():
        model.raw_lengthscale[:] = torch.tensor([0.3, -0.2], dtype=torch.float64)
        if not identical:
            model.raw_outputscale[:] = torch.linspace(-0.5, 0.5, members, dtype=torch.float64)
    model.eval()
    return model, X, y


def test_the_posterior_is_the_moment_matched_mixture_of_the_members():
    model, _, _ = ensemble()
    Xt, _ = data(7, seed=9)
    with torch.no_grad():
        mu, var = model.member_marginals(Xt)  # K x 7, standardised
        posterior = model.posterior(Xt.unsqueeze(-2))
    mean = mu.mean(0)
    variance = (var + mu**2).mean(0) - mean**2
    torch.testing.assert_close(posterior.mean.reshape(-1), mean * model.y_std + model.y_mean)
    torch.testing.assert_close(posterior.variance.reshape(-1), variance * model.y_std**2)
    # The members disagree: the mixture is wider than the average member.
    assert torch.all(variance >= var.mean(0) - 1e-12)


def test_the_joint_posterior_of_a_batch_agrees_with_the_marginals():
    model, _, _ = ensemble()
    Xt, _ = data(4, seed=8)
    joint = model.posterior(Xt.reshape(2, 2, 5))  # 2 batches of q = 2: the general path
    marginal = model.posterior(Xt.unsqueeze(-2))
    torch.testing.assert_close(joint.mean.reshape(-1), marginal.mean.reshape(-1))
    torch.testing.assert_close(
        joint.distribution.covariance_matrix.diagonal(dim1=-2, dim2=-1).reshape(-1),
        marginal.variance.reshape(-1),
        rtol=1e-6,
        atol=1e-6,
    )


def test_an_ensemble_of_identical_members_equals_one_member():
    many, X, y = ensemble(members=4, identical=True)
    network = BatchedMLP(1, 5, (16,), 2).double()
    with torch.no_grad():
        mine_all = [*network.weights, *network.biases]
        for mine, theirs in zip(
            mine_all, [*many.network.weights, *many.network.biases], strict=True
        ):
            mine[:] = theirs[:1]
    one = DKLEnsemble(X, y, network, torch.ones(1, len(y), dtype=torch.float64))
    one.load_state_dict(
        {k: v[:1] for k, v in many.state_dict().items() if k.startswith(("raw_", "constant"))},
        strict=False,
    )
    one.eval()
    Xt, _ = data(6, seed=7)
    a, b = many.posterior(Xt.unsqueeze(-2)), one.posterior(Xt.unsqueeze(-2))
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.variance, b.variance)
    la, lb = leave_one_out(many), leave_one_out(one)
    torch.testing.assert_close(la.log_density, lb.log_density)
    torch.testing.assert_close(la.variance, lb.variance)


def test_pending_points_keep_the_mean_and_shrink_the_variance():
    model, _, _ = ensemble()
    Xt, _ = data(5, seed=6)
    believer = model.condition_on_pending(Xt[:2])
    before, after = model.posterior(Xt.unsqueeze(-2)), believer.posterior(Xt.unsqueeze(-2))
    torch.testing.assert_close(after.mean[:2], before.mean[:2], rtol=1e-5, atol=1e-5)
    # Each member is surer there; the members' disagreement, part of the mixture's, stays.
    with torch.no_grad():
        _, member_before = model.member_marginals(Xt[:2])
        _, member_after = believer.member_marginals(Xt[:2])
    assert torch.all(member_after < member_before)
    assert torch.all(after.variance[:2] < before.variance[:2])


@pytest.mark.slow
def test_the_learner_fits_and_resumes_exactly():
    X, y = data(80, seed=1)
    Xt, yt = data(200, seed=2)
    learner = EnsembleLearner(5, n_members=3, hidden=(32,), first_fit_iterations=150, seed=0)
    learner.fit(X[:60], y[:60])
    copy = EnsembleLearner(5, n_members=3, hidden=(32,), first_fit_iterations=150, seed=0)
    copy.load_state_bytes(learner.state_bytes())
    model, again = learner.fit(X, y), copy.fit(X, y)
    mean, std = posterior_mean_std(model, Xt)
    assert np.corrcoef(mean, yt.numpy())[0, 1] > 0.9
    np.testing.assert_array_equal(mean, posterior_mean_std(again, Xt)[0])
    assert np.all(std > 0)
    # A point keeps its bootstrap weights as the data grow.
    torch.testing.assert_close(learner.bootstrap_weights(80)[:, :60], learner.bootstrap_weights(60))

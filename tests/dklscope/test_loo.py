"""Leave-one-out predictions, calibration records and model choice, against known answers."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from dklscope.config import ModelConfig
from dklscope.model.choice import AutoLearner, choose, stacking_weights
from dklscope.model.dkl import DKLModel, posterior_mean_std
from dklscope.model.family import Columns, build_learner, model_inputs, principal_components
from dklscope.model.loo import LeaveOneOut, calibration, flag_message, leave_one_out
from dklscope.model.training import DKLLearner


def fitted_gp(X, y, iterations=100):
    return DKLLearner(
        X.shape[1], network=nn.Identity(), first_fit_iterations=iterations, seed=0
    ).fit(X, y)


def test_leave_one_out_equals_refitting_without_each_point():
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.uniform(-2, 2, size=(25, 2)))
    y = torch.sin(2 * X[:, 0]) + 0.3 * X[:, 1] + 0.05 * torch.tensor(rng.standard_normal(25))
    model = fitted_gp(X, y)
    loo = leave_one_out(model)
    noise = float(model.likelihood.noise.detach())
    for i in (0, 7, 24):
        keep = torch.arange(25) != i
        # The same hyperparameters, conditioned on the other 24 points only.
        other = DKLModel(X[keep], y[keep].unsqueeze(-1), nn.Identity())
        other.load_state_dict(model.state_dict())
        other.set_train_data(X[keep], model.train_targets[keep], strict=False)
        other.eval()
        with torch.no_grad():
            mean, variance = other.marginals(X[i : i + 1])
        assert float(loo.mean[i]) == pytest.approx(float(mean), abs=1e-8)
        assert float(loo.variance[i]) == pytest.approx(float(variance) + noise, rel=1e-8)
        density = -0.5 * (
            (float(loo.y[i]) - float(mean)) ** 2 / (float(variance) + noise)
            + math.log(2 * math.pi * (float(variance) + noise))
        )
        assert float(loo.log_density[i]) == pytest.approx(density, abs=1e-8)


def test_a_mixture_of_identical_predictions_is_that_prediction():
    y = torch.tensor([0.1, -0.4, 1.2])
    mean, variance = torch.tensor([0.0, 0.1, 1.0]), torch.tensor([0.5, 0.2, 0.3])
    single = LeaveOneOut.gaussian(y, mean, variance)
    mixture = LeaveOneOut.mixture(y, mean.expand(3, -1), variance.expand(3, -1))
    torch.testing.assert_close(mixture.log_density, single.log_density)
    torch.testing.assert_close(mixture.mean, mean)
    torch.testing.assert_close(mixture.variance, variance)


def test_a_two_member_mixture_has_the_closed_form_density_mean_and_variance():
    y = torch.tensor([0.5], dtype=torch.float64)
    means = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    variances = torch.tensor([[1.0], [0.25]], dtype=torch.float64)
    mix = LeaveOneOut.mixture(y, means, variances)
    pdf = [
        math.exp(-((0.5 - m) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)
        for m, v in ((0, 1), (2, 0.25))
    ]
    assert float(mix.log_density) == pytest.approx(math.log(0.5 * sum(pdf)), abs=1e-12)
    assert float(mix.mean) == pytest.approx(1.0)
    # E[f^2] - E[f]^2 = (1 + 0 + 0.25 + 4) / 2 - 1
    assert float(mix.variance) == pytest.approx(1.625)


def test_calibration_of_known_residuals():
    z = torch.tensor([0.1, -0.3, 0.5, 1.0, -1.5, 2.5, 0.2, -0.1, 0.6, -0.9])
    loo = LeaveOneOut.gaussian(z, torch.zeros(10), torch.ones(10))
    record = calibration(loo)
    assert record.n == 10
    assert record.coverage50 == pytest.approx(0.6)  # |z| <= 0.674: 0.1, 0.3, 0.5, 0.2, 0.1, 0.6
    assert record.coverage95 == pytest.approx(0.9)  # all but 2.5
    assert record.z_sd == pytest.approx(float(z.pow(2).mean().sqrt()))
    assert record.flag is None


def test_overconfident_and_underconfident_models_are_flagged():
    rng = np.random.default_rng(1)
    y = torch.tensor(rng.standard_normal(200))
    narrow = calibration(LeaveOneOut.gaussian(y, torch.zeros(200), torch.full((200,), 0.25)))
    wide = calibration(LeaveOneOut.gaussian(y, torch.zeros(200), torch.full((200,), 9.0)))
    right = calibration(LeaveOneOut.gaussian(y, torch.zeros(200), torch.ones(200)))
    assert narrow.flag == "overconfident" and "too narrow" in flag_message(narrow.to_dict())
    assert wide.flag == "underconfident" and "too wide" in flag_message(wide.to_dict())
    assert right.flag is None and flag_message(right.to_dict()) is None
    assert right.coverage50 == pytest.approx(float((y.abs() <= 0.6744897501960817).double().mean()))
    assert right.coverage95 == pytest.approx(float((y.abs() <= 1.959963984540054).double().mean()))


def test_stacking_weights():
    rng = np.random.default_rng(2)
    good = torch.tensor(rng.normal(-1.0, 0.1, 50))
    # A model better at every point takes all the weight; two identical ones share it.
    w = stacking_weights(torch.stack([good, good - 3.0], dim=1))
    assert float(w[0]) > 0.99
    w = stacking_weights(torch.stack([good, good], dim=1))
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5], dtype=w.dtype))
    # Two models each right on half the points: the best mixture weighs them equally.
    a = torch.cat([torch.zeros(25), torch.full((25,), -20.0)]).double()
    w = stacking_weights(torch.stack([a, a.flip(0)], dim=1))
    assert float(w[0]) == pytest.approx(0.5, abs=1e-6)


def test_a_candidate_must_beat_the_reference_by_two_standard_errors():
    rng = np.random.default_rng(4)
    reference = torch.tensor(rng.normal(-1.0, 0.5, 40))
    noise = torch.tensor(rng.standard_normal(40))
    # d = 0.3 at every point plus noise of sd s: SE = s/sqrt(40); 2 SE = 0.32 s.
    clear = reference + 0.3 + 0.5 * (noise - noise.mean()) / noise.std()  # 2 SE = 0.16
    vague = (
        reference + 0.35 + 2.0 * (noise - noise.mean()) / noise.std()
    )  # 2 SE = 0.63, the best mean
    assert choose(torch.stack([reference, clear], 1)) == 1
    assert choose(torch.stack([reference, vague], 1)) == 0
    assert choose(torch.stack([reference, vague, clear], 1)) == 0  # the best mean is vague's
    assert choose(torch.stack([reference, clear - 1.0], 1)) == 0  # worse than the reference
    assert choose(torch.stack([reference, clear], 1)[:7]) == 0  # below MIN_POINTS: reference


def auto_learner(k_structure):
    candidates = {  # as the default list: gp-xy is the reference
        "gp-xy": Columns(range(k_structure, k_structure + 2)),
        "gp-structure-xy": Columns(range(k_structure + 2)),
        "gp-structure": Columns(range(k_structure)),
    }
    learners = {
        name: DKLLearner(
            k_structure + 2,
            network=network,
            first_fit_iterations=200,
            learning_rate=0.03,
            priors=True,
            seed=0,
        )
        for name, network in candidates.items()
    }
    return AutoLearner(learners)


@pytest.mark.parametrize("truth", ["position", "structure"])
def test_auto_chooses_by_what_the_truth_depends_on(truth):
    """Structure features and positions are independent; the truth depends on one of them."""
    rng = np.random.default_rng(3)
    n = 60
    xy = rng.uniform(-1.7, 1.7, size=(n, 2))
    structure = rng.standard_normal((n, 3))
    signal = (
        np.sin(2 * xy[:, 0]) * np.cos(xy[:, 1])
        if truth == "position"
        else np.tanh(2 * structure[:, 0]) + 0.5 * structure[:, 1]
    )
    y = signal + 0.05 * rng.standard_normal(n)
    X = torch.tensor(np.concatenate([structure, xy], axis=1))
    learner = auto_learner(3)
    model = learner.fit(X, torch.tensor(y))
    record = learner.last_record
    scores = record["scores"]
    if truth == "position":
        assert record["chosen"] == "gp-xy"
        assert scores["gp-xy"] > scores["gp-structure"] + 0.5
    else:
        assert record["chosen"] in ("gp-structure", "gp-structure-xy")
        assert max(scores["gp-structure"], scores["gp-structure-xy"]) > scores["gp-xy"] + 0.5
    assert abs(sum(record["weights"].values()) - 1) < 1e-9
    assert record["flag"] is None
    mean, _ = posterior_mean_std(model, X)
    assert np.corrcoef(mean, signal)[0, 1] > 0.9


def test_auto_state_round_trips():
    rng = np.random.default_rng(4)
    X = torch.tensor(rng.standard_normal((30, 5)))
    y = X[:, 3] + 0.1 * torch.tensor(rng.standard_normal(30))
    a = auto_learner(3)
    a.fit(X[:20], y[:20])
    b = auto_learner(3)
    b.load_state_bytes(a.state_bytes())
    ma, mb = a.fit(X, y), b.fit(X, y)
    assert a.last_record == b.last_record
    torch.testing.assert_close(posterior_mean_std(ma, X)[0], posterior_mean_std(mb, X)[0])
    before = {name: dict(lr._state) for name, lr in b.learners.items()}
    with b.frozen():  # conditions only: the weights stay
        b.fit(X[:25], y[:25])
    for name, learner in b.learners.items():
        assert learner.refit_iterations == 20  # restored
        for key, value in before[name].items():
            torch.testing.assert_close(learner._state[key], value)


def test_principal_components_find_the_one_direction_of_variation():
    rng = np.random.default_rng(5)
    direction = rng.standard_normal(16)
    amplitude = rng.standard_normal(500)
    patches = (amplitude[:, None] * direction + 0.01 * rng.standard_normal((500, 16))).reshape(
        500, 4, 4
    )
    scores = principal_components(patches, 2)
    assert scores.shape == (500, 2)
    assert abs(np.corrcoef(scores[:, 0], amplitude)[0, 1]) > 0.999
    np.testing.assert_allclose(scores.std(0), 1.0)


def test_auto_reference_is_the_gp_xy_baseline():
    """``kind: gp-xy`` (auto's reference) is the benchmarks' gp-xy baseline, ``kind: dkl`` with
    ``input: coordinates`` trained 200 + 50 steps: the same predictions after two fits."""
    rng = np.random.default_rng(6)
    patches, positions = rng.standard_normal((200, 6, 6)), rng.uniform(0, 20, (200, 2))
    y = torch.tensor(np.sin(positions[:, 0] / 3) + 0.1 * rng.standard_normal(200))
    idx = rng.choice(200, 30, replace=False)
    baseline = ModelConfig(input="coordinates", first_fit_iterations=200, refit_iterations=50)
    predictions = []
    for config in (ModelConfig(kind="gp-xy"), baseline):
        inputs, network = model_inputs(config, patches, positions, None)
        learner = build_learner(config, inputs, network, seed=0)
        learner.fit(inputs.tensor[idx[:20]], y[idx[:20]])
        predictions.append(
            posterior_mean_std(learner.fit(inputs.tensor[idx], y[idx]), inputs.tensor)
        )
    for ours, theirs in zip(*predictions, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)

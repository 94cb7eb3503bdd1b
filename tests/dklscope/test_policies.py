import dataclasses
import inspect
import math
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import norm

import dklscope.model.policies as policies
from dklscope.campaign.instruments import simulated_campaign
from dklscope.config import POLICY_KINDS, ConfigError, PolicyConfig, from_dict, parse_config
from dklscope.model.dkl import DKLModel, mlp
from dklscope.model.policies import (
    POLICIES,
    BetaSchedule,
    Choice,
    CoordinateGP,
    ExpectedImprovement,
    MaximumVariance,
    PolicyState,
    ProbabilityOfImprovement,
    QLogExpectedImprovement,
    QUpperConfidenceBound,
    RandomChoice,
    RasterScan,
    ThompsonSampling,
    UpperConfidenceBound,
    build_policy,
    decide,
    draw_posterior_paths,
    serpentine_order,
)

MEAN = np.array([0.0, 1.0, 0.5, 2.0, 1.5, 1.1])
STD = np.array([1.0, 0.1, 2.0, 0.3, 0.5, 0.05])


def state(
    model=None,
    mean=MEAN,
    std=STD,
    *,
    measured=(),
    best_f=1.2,
    step=0,
    q=1,
    positions=None,
    scalars=None,
    seed=0,
):
    """A policy state over candidates whose known posterior is N(mean, std^2)."""
    n = len(mean)
    mask = np.zeros(n, dtype=bool)
    mask[list(measured)] = True
    indices = np.flatnonzero(mask)
    return PolicyState(
        model=model,
        candidates=torch.tensor(np.stack([mean, std], axis=1)),
        positions=np.stack([np.arange(n) * 10.0, np.zeros(n)], axis=1)
        if positions is None
        else positions,
        measured=mask,
        scalars=np.full(len(indices), best_f) if scalars is None else scalars,
        measured_indices=indices,
        best_f=best_f,
        step=step,
        rng=np.random.default_rng(seed),
        q=q,
    )


def closed_form_ei(mean, std, best_f):
    z = (mean - best_f) / std
    return (mean - best_f) * norm.cdf(z) + std * norm.pdf(z)


# -- analytic policies against closed forms -----------------------------------------------------


def test_expected_improvement_matches_the_closed_form(known_model):
    s = state(known_model)
    (decision,) = decide(ExpectedImprovement(), s)
    expected = closed_form_ei(MEAN, STD, 1.2)
    assert decision.index == int(np.argmax(expected)) == 3
    assert decision.acquisition_value == pytest.approx(expected.max(), rel=1e-6)
    assert decision.predicted_mean == pytest.approx(MEAN[decision.index])
    assert decision.predicted_std == pytest.approx(STD[decision.index])


def test_expected_improvement_skips_measured_candidates(known_model):
    (decision,) = decide(ExpectedImprovement(), state(known_model, measured=[2, 3]))
    expected = closed_form_ei(MEAN, STD, 1.2)
    expected[[2, 3]] = -1
    assert decision.index == int(np.argmax(expected)) == 4


def test_expected_improvement_ranks_far_below_the_incumbent(known_model):
    # Plain EI underflows to exactly 0 for all of these; the ranking must still follow it.
    mean = np.array([-40.0, -30.0, -35.0])
    s = state(known_model, mean, np.ones(3), best_f=0.0)
    choice = ExpectedImprovement(batch_size=2).choose(s)
    assert choice.indices == (1,)
    assert 0.0 <= choice.values[0] < 1e-100


def test_probability_of_improvement_matches_the_closed_form(known_model):
    s = state(known_model, best_f=1.05)
    choice = ProbabilityOfImprovement().choose(s)
    expected = norm.cdf((MEAN - 1.05) / STD)
    assert choice.indices == (int(np.argmax(expected)),) == (3,)
    assert choice.values[0] == pytest.approx(expected.max(), rel=1e-6)


def test_upper_confidence_bound_adds_sqrt_beta_standard_deviations(known_model):
    # beta = 9 is mean + 3 std: candidate 2 (0.5 + 6.0); beta = 0.25 is mean + std / 2: 3.
    for beta, best in ((9.0, 2), (0.25, 3)):
        choice = UpperConfidenceBound(beta=beta).choose(state(known_model))
        ucb = MEAN + math.sqrt(beta) * STD
        assert choice.indices == (best,)
        assert choice.values[0] == pytest.approx(ucb[best], rel=1e-9)
    assert UpperConfidenceBound().choose(state(known_model)).values[0] == pytest.approx(4.5)


def test_beta_schedules_give_the_documented_value_at_each_step():
    assert [BetaSchedule(2.0).at(t) for t in (0, 5)] == [2.0, 2.0]
    annealed = BetaSchedule(9.0, "annealed", decay=0.5)
    assert [annealed.at(t) for t in range(4)] == pytest.approx([9.0, 4.5, 2.25, 1.125])
    listed = BetaSchedule(schedule="list", betas=(9.0, 4.0, 1.0))
    assert [listed.at(t) for t in range(5)] == [9.0, 4.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="decay"):
        BetaSchedule(decay=1.5)


def test_ucb_follows_its_schedule_through_the_policy_steps(known_model):
    policy = UpperConfidenceBound(schedule="list", betas=[9.0, 0.25])
    first, later = (policy.choose(state(known_model, step=t)) for t in (0, 7))
    assert first.indices == (2,) and first.values[0] == pytest.approx(0.5 + 3 * 2.0)
    assert later.indices == (3,) and later.values[0] == pytest.approx(2.0 + 0.5 * 0.3)


def test_maximum_variance_picks_the_widest_posterior(known_model):
    choice = MaximumVariance().choose(state(known_model, measured=[2]))
    assert choice.indices == (0,)
    assert choice.values[0] == pytest.approx(1.0)


def test_single_point_policies_refuse_a_batch(known_model):
    with pytest.raises(ValueError, match="ExpectedImprovement chooses one point"):
        ExpectedImprovement().choose(state(known_model, q=2))


# -- Thompson sampling ------------------------------------------------------------------------


def small_dkl_model(kernel):
    """A DKL model with fixed hyperparameters on 8 points in 3 dimensions."""
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(8, 3, generator=gen, dtype=torch.float64)
    Y = torch.sin(4 * X.sum(-1, keepdim=True)) * 3 + 5
    network = mlp(3, (8,), 2).to(torch.float64)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    model = DKLModel(X, Y, network, kernel)
    model.covar_module.base_kernel.lengthscale = torch.tensor([1.5, 2.5])
    model.covar_module.outputscale = 1.3
    model.likelihood.noise = 0.05
    model.eval()
    return model, X


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_thompson_paths_have_the_posterior_mean_and_covariance(kernel):
    model, X = small_dkl_model(kernel)
    gen = torch.Generator().manual_seed(1)
    # Two training points, two near them, one far away (posterior variance near the prior).
    points = torch.cat([X[:2], torch.rand(2, 3, generator=gen, dtype=torch.float64), X[:1] + 3])
    with torch.no_grad():  # exact (no LOVE) joint posterior of the 5 points
        exact = model.posterior(points.unsqueeze(0))
        mean = exact.mean.reshape(-1).numpy()
        cov = exact.mvn.covariance_matrix.squeeze(0).numpy()  # in the data's units
    n = 4000
    samples = draw_posterior_paths(model, n, np.random.default_rng(2), n_features=256)(points)
    samples = samples.numpy()
    assert samples.shape == (n, 5)
    std = np.sqrt(np.diag(cov))
    # Means within 4.5 standard errors; variances within 12% (about 5 of their standard
    # errors, sqrt(2 / n) = 2.2%); the correlation of two points within 0.06.
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4.5 * std / math.sqrt(n))
    np.testing.assert_allclose(samples.var(0), std**2, rtol=0.12)
    sample_corr = np.corrcoef(samples[:, 2], samples[:, 3])[0, 1]
    assert sample_corr == pytest.approx(cov[2, 3] / (std[2] * std[3]), abs=0.06)


def test_thompson_sampling_chooses_distinct_unmeasured_maxima_of_its_paths():
    model, _ = small_dkl_model("rbf")
    gen = torch.Generator().manual_seed(3)
    candidates = torch.rand(200, 3, generator=gen, dtype=torch.float64)
    s = dataclasses.replace(
        state(None, np.zeros(200), np.ones(200), measured=[0, 5, 9], q=3, seed=4),
        model=model,
        candidates=candidates,
    )
    torch_state = torch.get_rng_state()
    choice = ThompsonSampling(features=128).choose(s)
    assert torch.equal(torch_state, torch.get_rng_state())  # the global RNG is untouched
    assert len(set(choice.indices)) == 3 and not s.measured[list(choice.indices)].any()
    # The same generator state replays the same paths: the values are their maxima.
    paths = draw_posterior_paths(model, 3, np.random.default_rng(4), 128)(candidates).numpy()
    for k, (i, v) in enumerate(zip(choice.indices, choice.values, strict=True)):
        assert v == pytest.approx(paths[k, i])
        assert v == pytest.approx(np.delete(paths[k], [0, 5, 9, *choice.indices[:k]]).max())


# -- batch policies ---------------------------------------------------------------------------


def test_qlogei_with_one_point_agrees_with_analytic_ei(known_model):
    s = state(known_model, measured=[3])
    policy = QLogExpectedImprovement(mc_samples=1024, shortlist=len(MEAN))
    choice = policy.choose(s)
    expected = closed_form_ei(MEAN, STD, 1.2)
    expected[3] = -1
    assert choice.indices == (int(np.argmax(expected)),)
    assert choice.values[0] == pytest.approx(expected.max(), rel=0.03)


def test_qucb_with_one_point_agrees_with_analytic_ucb(known_model):
    s = state(known_model, measured=[2])
    choice = QUpperConfidenceBound(beta=4.0, mc_samples=1024, shortlist=len(MEAN)).choose(s)
    ucb = MEAN + 2 * STD
    ucb[2] = -1
    assert choice.indices == (int(np.argmax(ucb)),) == (3,)
    assert choice.values[0] == pytest.approx(ucb.max(), rel=0.02)


@pytest.mark.parametrize("policy", [QLogExpectedImprovement(), QUpperConfidenceBound()])
def test_batch_policies_choose_q_distinct_unmeasured_points(known_model, policy):
    rng = np.random.default_rng(5)
    mean, std = rng.normal(size=300), rng.uniform(0.1, 1.0, 300)
    s = state(known_model, mean, std, measured=range(0, 300, 7), best_f=1.0, q=4)
    decisions = decide(policy, s)
    indices = [d.index for d in decisions]
    assert len(set(indices)) == 4 and not s.measured[indices].any()
    assert [d.predicted_mean for d in decisions] == pytest.approx(mean[indices])
    assert all(math.isfinite(d.acquisition_value) for d in decisions)


# -- baselines --------------------------------------------------------------------------------


def test_serpentine_raster_order_and_skipping_measured_points():
    # A 3 x 3 grid listed column by column, to show the order comes from the positions.
    xs, ys = np.meshgrid(np.arange(3) * 4.0, np.arange(3) * 4.0, indexing="ij")
    positions = np.stack([xs.ravel(), ys.ravel()], axis=1)
    visits = [tuple(positions[i]) for i in serpentine_order(positions)]
    assert visits == [
        (0, 0), (4, 0), (8, 0), (8, 4), (4, 4), (0, 4), (0, 8), (4, 8), (8, 8)
    ]  # fmt: skip
    measured = [int(np.flatnonzero((positions == p).all(1))[0]) for p in [(0, 0), (8, 0)]]
    s = state(None, np.zeros(9), np.ones(9), measured=measured, positions=positions, q=3)
    choice = RasterScan().choose(s)
    assert [tuple(positions[i]) for i in choice.indices] == [(4, 0), (8, 4), (4, 4)]
    assert choice.values is None


def test_random_choice_never_repeats_and_covers_the_rest():
    s = state(None, np.zeros(6), np.ones(6), measured=[0, 2], q=2)
    picks = [
        RandomChoice().choose(dataclasses.replace(s, rng=np.random.default_rng(k)))
        for k in range(60)
    ]
    assert all(len(set(c.indices)) == 2 for c in picks)
    assert set().union(*(c.indices for c in picks)) == {1, 3, 4, 5}


def test_coordinate_gp_finds_the_peak_of_a_smooth_function():
    xs, ys = np.meshgrid(np.arange(30.0), np.arange(30.0))
    positions = np.stack([xs.ravel(), ys.ravel()], axis=1)
    truth = np.exp(-((positions[:, 0] - 21) ** 2 + (positions[:, 1] - 8) ** 2) / (2 * 6.0**2))
    measured = list(np.flatnonzero((positions[:, 0] % 10 == 5) & (positions[:, 1] % 10 == 5)))
    policy = CoordinateGP(max_iterations=20)
    for step in range(3):
        s = state(None, np.zeros(900), np.ones(900), measured=[], positions=positions)
        s.measured[measured] = True
        s = dataclasses.replace(
            s,
            scalars=truth[measured],
            measured_indices=np.array(measured),
            best_f=float(truth[measured].max()),
            step=step,
        )
        (decision,) = decide(policy, s)
        assert decision.acquisition_value >= 0 and math.isnan(decision.predicted_mean)
        measured.append(decision.index)
    # From 0.61 on the 3 x 3 grid; 3 random picks reach 0.9 (2.7% of the pixels) 8% of the time.
    assert truth[measured].max() > 0.9


# -- custom policies, checking answers, configuration ------------------------------------------


def doc_example():
    """The custom policy and the YAML that the module's documentation shows."""
    doc = policies.__doc__
    code = doc[doc.index("# my_policies.py") : doc.index("and in the campaign's YAML")]
    text = doc[doc.index("policy:\n") : doc.index("`build_policy` imports")]
    return textwrap.dedent("    " + code), yaml.safe_load(textwrap.dedent("    " + text))


@pytest.fixture
def my_policies(tmp_path, monkeypatch):
    code, _ = doc_example()
    (tmp_path / "my_policies.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("my_policies", None)


def test_the_documented_custom_policy_runs_through_build_policy(my_policies, known_model):
    _, data = doc_example()
    config = from_dict(PolicyConfig, data["policy"])
    assert config == PolicyConfig(kind="my_policies:LocalUCB", params={"radius": 8, "kappa": 2.0})
    config = dataclasses.replace(config, params={"radius": 15, "kappa": 2.0})
    policy = build_policy(config)
    assert type(policy).__name__ == "LocalUCB" and policy.radius == 15
    # The best measurement is candidate 0 at x = 0; only candidate 1 (x = 10) is within 15 px,
    # though candidate 2 has the larger UCB.
    s = state(known_model, measured=[0], scalars=np.array([3.0]), best_f=3.0)
    (decision,) = decide(policy, s)
    assert decision.index == 1
    assert decision.acquisition_value == pytest.approx(1.0 + 2 * 0.1)
    assert decision.predicted_std == pytest.approx(0.1)
    s = state(known_model, measured=[0, 1], scalars=np.array([3.0, 0.0]), best_f=3.0)
    assert decide(policy, s)[0].index == 2  # none left nearby: the best UCB anywhere


class ListPolicy:
    needs_model = False

    def __init__(self, answer):
        self.answer = answer

    def choose(self, state):
        return self.answer


def test_a_plain_list_of_indices_is_accepted():
    decisions = decide(ListPolicy(np.array([4, 1])), state(None, q=2))
    assert decide(ListPolicy(torch.tensor([3])), state(None))[0].index == 3
    assert [d.index for d in decisions] == [4, 1]
    assert all(math.isnan(d.acquisition_value) for d in decisions)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ([2], "candidate 2, which is already measured"),
        ([1, 1], "chose a candidate twice"),
        ([6], "index 6, outside the 6 candidates"),
        ([1, 3, 4], "chose 3 points; it must choose 1 to 2"),
        ([], "chose 0 points"),
        ([1.0], "not a candidate index"),
        (Choice((1, 3), (0.5,)), "1 values for 2 chosen points"),
        ("1", "returned str"),
    ],
)
def test_bad_answers_are_refused_naming_the_policy(answer, fragment):
    with pytest.raises(ValueError, match="policy ListPolicy") as info:
        decide(ListPolicy(answer), state(None, measured=[2], q=2))
    assert fragment in str(info.value)


MINIMAL = "instrument: {simulator: {}}\nscalarizer: {window: [1.0, 1.4]}\n"


@pytest.mark.parametrize(
    ("policy", "path", "fragment"),
    [
        ("{kind: nope}", "policy.kind", "must be one of ei, pi, ucb"),
        ("{kind: ucb, beta: -1}", "policy.beta", "must be > 0"),
        ("{kind: ei, beta: 2}", "policy.beta", "is not read by kind 'ei'"),
        ("{kind: ei, q: 2}", "policy.q", "chooses one point at a time"),
        ("{kind: qucb, q: 0}", "policy.q", "must be >= 1"),
        ("{kind: ucb, decay: 0.9}", "policy.decay", "only with schedule: annealed"),
        ("{kind: ucb, schedule: annealed, decay: 1.5}", "policy.decay", "in (0, 1]"),
        ("{kind: ucb, schedule: list}", "policy.betas", "exactly when schedule is 'list'"),
        ("{kind: ucb, schedule: list, betas: [4, 0]}", "policy.betas", "values > 0"),
        ("{kind: ucb, schedule: list, betas: [4], beta: 1}", "policy.beta", "not 'beta'"),
        ("{kind: ucb, schedule: sometimes}", "policy.schedule", "must be one of"),
        ("{kind: thompson, features: 0}", "policy.features", "must be >= 1"),
        ("{kind: qlogei, mc_samples: 0}", "policy.mc_samples", "must be >= 1"),
        ("{kind: random, params: {a: 1}}", "policy.params", "is not read by kind 'random'"),
        ("{kind: 'a.b:C', params: [1]}", "policy.params", "must be a mapping"),
        ("{kind: ei, shortlist: 5}", "policy.shortlist", "is not read by kind 'ei'"),
    ],
)
def test_bad_policy_configs_name_the_key(policy, path, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f"policy: {policy}\n")
    assert info.value.path == path
    assert fragment in info.value.message


def test_custom_policies_that_cannot_be_built_name_the_key(my_policies):
    cases = [
        ("no_such_module_xyz:Policy", None, "policy.kind", "ModuleNotFoundError"),
        ("my_policies:Missing", None, "policy.kind", "AttributeError"),
        ("fractions:Fraction", None, "policy.kind", "is not a policy"),
        ("my_policies:LocalUCB", {"radius": 1, "bogus": 2}, "policy.params", "bogus"),
    ]
    for kind, params, path, fragment in cases:
        with pytest.raises(ConfigError) as info:
            build_policy(PolicyConfig(kind=kind, params=params))
        assert info.value.path == path
        assert fragment in info.value.message and "\n" not in str(info.value)


def test_every_kind_builds_with_its_keys():
    assert set(POLICIES) == set(POLICY_KINDS)
    for kind, cls in POLICIES.items():
        accepted = inspect.signature(cls).parameters
        assert all(key in accepted for key in POLICY_KINDS[kind]), kind
        policy = build_policy(PolicyConfig(kind=kind))
        assert isinstance(policy, cls) and isinstance(policy.needs_model, bool)
    ucb = build_policy(parse_config(MINIMAL + "policy: {kind: ucb, beta: 2.5}").policy)
    assert ucb.schedule == BetaSchedule(2.5)
    qucb = parse_config(
        MINIMAL + "policy: {kind: qucb, q: 3, schedule: annealed, beta: 8, decay: 0.5}"
    ).policy
    assert build_policy(qucb).schedule.at(2) == 2.0 and qucb.q == 3


# -- in a campaign ----------------------------------------------------------------------------


def test_a_campaign_measures_each_batch_in_order_before_deciding_again(monkeypatch):
    config = parse_config(
        """
seed: 2
instrument:
  simulator: {shape: [16, 16], seed: 1, noise: false}
budget: {seed_points: 2, steps: 5}
patches: {size: 4, stride: 3}
scalarizer: {window: [1.05, 1.35]}
policy: {kind: raster, q: 3}
runner: {pipeline: false}
"""
    )
    calls = []
    original = RasterScan.choose

    def spy(self, s):
        calls.append(s)
        return original(self, s)

    monkeypatch.setattr(RasterScan, "choose", spy)
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        measurements = campaign.journal.measurements()
    assert [len(journal_seq) for journal_seq in [measurements]] == [7]
    assert [c.step for c in calls] == [0, 3]  # two decisions: 3 points, then 2 of 3
    assert [len(c.scalars) for c in calls] == [2, 5]
    seeds = {m.candidate for m in measurements[:2]}
    order = [int(i) for i in serpentine_order(calls[0].positions) if i not in seeds]
    assert [m.candidate for m in measurements[2:]] == order[:5]
    positions = calls[0].positions
    assert all((positions[m.candidate] == (m.x, m.y)).all() for m in measurements)
    np.testing.assert_array_equal(
        calls[1].measured_indices, [m.candidate for m in measurements[:5]]
    )

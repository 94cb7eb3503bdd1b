"""Every refit journals the model chosen and its leave-one-out calibration; a flag is logged."""

import logging

import pytest

from dklscope.campaign.instruments import simulated_campaign
from dklscope.config import parse_config
from dklscope.model.choice import AutoLearner

SMALL = """
seed: 2
instrument:
  simulator: {shape: [24, 24], seed: 1}
budget: {seed_points: 4, steps: 8}
patches: {size: 6}
scalarizer: {window: [1.05, 1.35]}
"""


def test_every_policy_decision_journals_the_choice_and_its_calibration():
    config = parse_config(SMALL)
    assert config.model.family == "auto"
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        events = campaign.journal.events("model")
        decisions = [d.number for d in campaign.decisions if d.kind == "policy"]
    assert [e["decision"] for e in events] == decisions
    for e in events:
        assert e["model_kind"] == "auto"
        assert set(e["scores"]) == set(config.model.candidates) == set(e["weights"])
        assert e["chosen"] in config.model.candidates
        assert e["n"] == e["n_train"] >= 3  # pipelined: the last seed point is under way
        assert 0 <= e["coverage50"] <= e["coverage95"] <= 1
        assert e["z_sd"] > 0 and e["flag"] in (None, "overconfident", "underconfident")
    # Below 8 points the reference (the first candidate) is used; from 8 on, the best score
    # or the reference.
    reference = config.model.candidates[0]
    for e in events:
        best = max(e["scores"], key=e["scores"].get)
        assert e["chosen"] == reference if e["n_train"] < 8 else e["chosen"] in (best, reference)


def test_a_single_model_journals_its_own_calibration():
    config = parse_config(SMALL + "model: {kind: gp-xy}\n")
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        events = campaign.journal.events("model")
    assert len(events) == 8
    assert all(list(e["scores"]) == ["gp-xy"] and e["chosen"] == "gp-xy" for e in events)


class FlaggedLearner(AutoLearner):
    """Reports every fit as overconfident."""

    def fit(self, X, Y):
        model = super().fit(X, Y)
        self.last_record = {**self.last_record, "flag": "overconfident", "coverage95": 0.5}
        return model


def test_a_miscalibrated_model_is_logged_once_while_it_stays_so(caplog):
    config = parse_config(SMALL)
    with simulated_campaign(config) as (campaign, _):
        learner = campaign.learner
        campaign.learner = FlaggedLearner(learner.learners)
        with caplog.at_level(logging.WARNING, logger="dklscope.campaign"):
            campaign.run()
        events = campaign.journal.events("model")
    assert all(e["flag"] == "overconfident" for e in events)
    warnings = [r.getMessage() for r in caplog.records if "too narrow" in r.getMessage()]
    assert len(warnings) == 1
    assert "95 % intervals held 50% of left-out measurements" in warnings[0]


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("model: {kind: auto, input: patches}", "model.input: is read only by kind 'dkl'"),
        ("model: {candidates: [gp-xy, dkl]}", "model.candidates: must be among"),
        ("model: {candidates: [gp-xy, gp-xy]}", "model.candidates: names a model twice"),
        ("model: {candidates: []}", "model.candidates: must name at least one model"),
        ("model: {kind: gp-structure, structure_dim: 0}", "model.structure_dim: must be >= 1"),
    ],
)
def test_bad_model_sections_are_refused_naming_the_key(yaml, message):
    from dklscope.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(SMALL + yaml + "\n")


def test_a_config_from_before_model_kinds_keeps_its_meaning():
    assert parse_config(SMALL + "model: {input: coordinates}\n").model.family == "dkl"
    assert parse_config(SMALL).model.family == "auto"
    assert parse_config(SMALL + "model: {kind: dkl}\n").model.dkl_input == "patches"

"""What a decision is computed from: surrogate models, scalarizers and policies.

- `dkl`: the deep-kernel GP (`DKLModel`) and its fast posterior; `training`: its training by
  the marginal likelihood (`DKLLearner`, warm starts);
- `ensemble` (`EnsembleLearner`) and `bayesian_dkl` (`BayesianDKLLearner`): the network's
  uncertainty as a mixture of GPs;
- `family`: the `Learner` protocol and the learner each ``model.kind`` builds; `choice`: the
  ``auto`` learner, which picks a model by leave-one-out (`loo`: closed-form LOO and calibration);
- `scalarizers`: spectrum -> the scalar a campaign optimises;
- `policies`: the acquisition policies and `decide`.

Nothing here knows about instruments or journals. Names are imported on first use.
"""

from dklscope import lazy_names

__getattr__, __dir__, __all__ = lazy_names(
    __name__,
    {
        "dkl": ("DKLModel", "members", "noise_variance", "posterior_mean_std"),
        "training": ("DKLLearner", "train_exact_mll"),
        "ensemble": ("DKLEnsemble", "EnsembleLearner"),
        "bayesian_dkl": ("BayesianDKLLearner",),
        "family": ("Learner", "build_learner", "model_inputs"),
        "choice": ("AutoLearner",),
        "loo": ("Calibration", "LeaveOneOut", "calibration", "leave_one_out"),
        "scalarizers": ("Scalarizer", "build_scalarizer", "check_scalarizer"),
        "policies": ("Choice", "Decision", "Policy", "PolicyState", "build_policy", "decide"),
    },
)

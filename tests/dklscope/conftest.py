import pytest
import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal


class KnownGaussianModel(Model):
    """A model whose posterior at a point x is Normal(mean=x[0], std=x[1]), independently."""

    num_outputs = 1

    def posterior(self, X, output_indices=None, observation_noise=False, posterior_transform=None):
        mean, std = X[..., 0], X[..., 1]
        return GPyTorchPosterior(MultivariateNormal(mean, torch.diag_embed(std**2)))


@pytest.fixture
def known_model():
    return KnownGaussianModel()

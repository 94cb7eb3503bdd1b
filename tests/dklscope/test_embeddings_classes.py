"""jVAE and ssVAE: recovering the classes of a two-class set with rotation and strain."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dklscope.embeddings import TrainerConfig
from dklscope.embeddings.jvae import JVAE, JVAEConfig
from dklscope.embeddings.ssvae import SSVAE, SSVAEConfig
from dklscope.embeddings.trainer import SVITrainer

sys.path.insert(0, str(Path(__file__).parent))
from embedding_data import motif_patches, one_thread

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
TRAINER = TrainerConfig(epochs=15, learning_rate=3e-3, patience=None, progress=False)


def two_class_set(n, seed):
    """An L-shaped trimer (class 0) and a rhombus (class 1), each rotated by up to ±90° and
    strained by up to ±10% along one axis."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, n)
    x = motif_patches(
        n,
        seed=seed,
        classes=classes,
        angle=rng.uniform(-np.pi / 2, np.pi / 2, n),
        strain=rng.uniform(-0.1, 0.1, n),
    )
    return x, classes


def accuracy_up_to_permutation(predicted, truth):
    accuracy = (predicted == truth).mean()
    return max(accuracy, 1 - accuracy)


@pytest.mark.slow
def test_jrvae_recovers_two_classes_with_rotation_and_strain():
    x, _ = two_class_set(2000, seed=0)
    model = JVAE(
        JVAEConfig((1, 16, 16), rotation=True, hidden=(128, 64), rotation_prior=1.0, seed=0)
    )
    SVITrainer(TRAINER).fit(model, x)
    x_test, truth = two_class_set(500, seed=5)
    enc = model.encode(torch.as_tensor(x_test))
    assert enc.class_probs.shape == (500, 2)
    np.testing.assert_allclose(enc.class_probs.sum(axis=1), 1, rtol=1e-5)
    assert accuracy_up_to_permutation(enc.classes, truth) >= 0.9  # measured 1.0 at this seed
    # Decoding a class gives that class' motif: the rhombus class is the one with four atoms,
    # so more total intensity.
    code = np.zeros((2, 2), np.float32)
    images = model.decode(torch.as_tensor(code), torch.tensor([0, 1])).numpy()
    rhombus = np.bincount(enc.classes[truth == 1], minlength=2).argmax()
    assert images[rhombus].sum() > images[1 - rhombus].sum()


@pytest.mark.slow
def test_ssvae_with_five_percent_of_labels_classifies():
    x, classes = two_class_set(2000, seed=0)
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(len(x)) < 0.05, classes, -1)
    assert 50 <= (labels >= 0).sum() <= 150
    model = SSVAE(SSVAEConfig((1, 16, 16), rotation=True, hidden=(128, 64), rotation_prior=1.0))
    SVITrainer(TRAINER).fit(model, x, labels)
    x_test, truth = two_class_set(500, seed=5)
    predicted = model.classify(torch.as_tensor(x_test)).numpy()
    assert (predicted == truth).mean() >= 0.9  # measured 1.0; the labels fix the permutation

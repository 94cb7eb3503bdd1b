"""VAE and rVAE: invariances, the code's units, seeds, evaluate, save/load, DKL extractor.

Patches are 16 x 16 renderings of an asymmetric three-atom motif (tests/dklscope/
embedding_data.py) with known rotation, offset and scale, so each latent has a known answer.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dklscope.embeddings import EmbeddingConfig, ModelEmbedding, TrainerConfig, build_embedding
from dklscope.embeddings.trainer import SVITrainer
from dklscope.embeddings.vae import VAE, VAEConfig

sys.path.insert(0, str(Path(__file__).parent))
from embedding_data import motif_patches, one_thread

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)

N_TRAIN = 3000
TRAINER = TrainerConfig(epochs=20, learning_rate=3e-3, patience=None, progress=False)


def training_set(seed=0, translation=False, scale=False):
    rng = np.random.default_rng(seed)
    n = N_TRAIN
    return motif_patches(
        n,
        seed=seed,
        angle=rng.uniform(-np.pi / 2, np.pi / 2, n),
        trait=rng.uniform(-1, 1.5, n),
        offset=rng.normal(0, 1.0, (n, 2)) if translation else None,
        log_scale=rng.normal(0, 0.1, n) if scale else None,
    )


def fit(config, x):
    model = VAE(config)
    SVITrainer(TRAINER).fit(model, x)
    return model


@pytest.fixture(scope="module")
def rvae():
    config = VAEConfig((1, 16, 16), rotation=True, hidden=(128, 64), rotation_prior=1.0)
    return fit(config, training_set())


@pytest.fixture(scope="module")
def full_rvae():
    config = VAEConfig(
        (1, 16, 16),
        rotation=True,
        translation=True,
        scale=True,
        hidden=(128, 64),
        rotation_prior=1.0,
    )
    return fit(config, training_set(translation=True, scale=True))


def encode(model, **kwargs):
    return model.encode(torch.as_tensor(motif_patches(200, **kwargs)))


@pytest.mark.slow
def test_rotating_a_patch_moves_the_angle_latent_by_the_rotation_not_the_content(rvae):
    rng = np.random.default_rng(1)
    a0, trait, theta = rng.uniform(-np.pi / 4, np.pi / 4, 200), rng.uniform(-1, 1.5, 200), 0.5
    e0 = encode(rvae, seed=1, angle=a0, trait=trait)
    e1 = encode(rvae, seed=2, angle=a0 + theta, trait=trait)
    error = e1.angle_loc - e0.angle_loc - theta
    # Tolerance: 0.1 rad (5.7°) mean absolute error for a 0.5 rad rotation (measured: 0.035).
    assert np.abs(error).mean() < 0.1
    # Content: the rotation moves z by < 25% of the spread of z over the trait (measured 10%).
    shift = np.linalg.norm(e1.z_loc - e0.z_loc, axis=1).mean()
    spread = np.linalg.norm(e0.z_loc.std(axis=0))
    assert shift < 0.25 * spread
    # and the content latents do describe the trait (the stretched arm).
    assert max(abs(np.corrcoef(e0.z_loc[:, j], trait)[0, 1]) for j in range(2)) > 0.9


@pytest.mark.slow
def test_offset_and_scale_latents_report_pixels_and_log_magnification(full_rvae):
    rng = np.random.default_rng(2)
    a0, trait = rng.uniform(-np.pi / 4, np.pi / 4, 200), rng.uniform(-1, 1.5, 200)
    e0 = encode(full_rvae, seed=1, angle=a0, trait=trait)
    shifted = encode(
        full_rvae, seed=3, angle=a0, trait=trait, offset=np.tile([1.5, -1.0], (200, 1))
    )
    moved = (shifted.offset_loc - e0.offset_loc).mean(axis=0)
    np.testing.assert_allclose(moved, [1.5, -1.0], atol=0.15)  # (row, col) px; measured ±0.03
    bigger = encode(full_rvae, seed=4, angle=a0, trait=trait, log_scale=np.full(200, 0.15))
    grown = (bigger.log_scale_loc - e0.log_scale_loc).mean()
    assert abs(grown - 0.15) < 0.04  # measured 0.146
    turned = encode(full_rvae, seed=5, angle=a0 + 0.5, trait=trait)
    assert abs((turned.angle_loc - e0.angle_loc).mean() - 0.5) < 0.1


@pytest.mark.slow
def test_decode_accepts_the_full_code_and_reproduces_the_patch(full_rvae):
    x = motif_patches(100, seed=7, angle=np.linspace(-1, 1, 100), offset=np.full((100, 2), 0.5))
    enc = full_rvae.encode(torch.as_tensor(x))
    assert enc.code.shape == (100, 2 + 1 + 2 + 1)
    recon = full_rvae.decode(torch.as_tensor(enc.code)).numpy()
    assert recon.shape == x.shape
    assert ((recon - x) ** 2).mean() < 0.1 * x.var()
    # Content only: the canonical patch, the same for every rotation of the same motif.
    canonical = full_rvae.decode(torch.as_tensor(enc.z_loc)).numpy()
    assert ((canonical - canonical.mean(axis=0)) ** 2).mean() < ((x - x.mean(axis=0)) ** 2).mean()


def small_fit(seed, x):
    config = EmbeddingConfig(
        kind="rvae",
        hidden=(32,),
        seed=seed,
        trainer=TrainerConfig(epochs=2, batch_size=50, seed=seed, progress=False),
    )
    embedding = build_embedding(config)
    embedding.fit(x)
    return embedding


def test_same_seed_same_weights_and_the_global_rng_is_untouched():
    x = motif_patches(200, seed=0, angle=np.linspace(-1, 1, 200))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = small_fit(0, x), small_fit(0, x), small_fit(1, x)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = (e.model.state_dict() for e in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_evaluate_changes_no_parameter_and_is_repeatable():
    x = motif_patches(200, seed=0, angle=np.linspace(-1, 1, 200))
    embedding = small_fit(0, x)
    state = {k: v.clone() for k, v in embedding.model.state_dict().items()}
    first = embedding.evaluate(x)
    assert embedding.evaluate(x) == first
    assert all(torch.equal(state[k], v) for k, v in embedding.model.state_dict().items())
    assert np.isfinite(first)


def test_save_and_load_give_the_same_encoding(tmp_path):
    x = motif_patches(50, seed=0, angle=np.linspace(-1, 1, 50))
    embedding = small_fit(0, x)
    embedding.save(tmp_path / "rvae.pt")
    loaded = ModelEmbedding.load(tmp_path / "rvae.pt")
    assert loaded.config == embedding.config
    np.testing.assert_array_equal(loaded.encode(x).code, embedding.encode(x).code)
    np.testing.assert_array_equal(loaded.encode(x).angle_loc, embedding.encode(x).angle_loc)


def test_feature_extractor_maps_flat_patches_to_the_content_means():
    x = motif_patches(20, seed=0)
    embedding = small_fit(0, x)
    extractor = embedding.feature_extractor().to(torch.float64)
    z = extractor(torch.as_tensor(x.reshape(20, -1), dtype=torch.float64))
    assert z.shape == (20, 2)
    np.testing.assert_allclose(z.detach().numpy(), embedding.encode(x).z_loc, atol=1e-5)


def test_early_stopping_keeps_the_best_held_out_epoch():
    x = motif_patches(200, seed=0)
    model = VAE(VAEConfig((1, 16, 16), hidden=(32,)))
    history = SVITrainer(
        TrainerConfig(epochs=50, patience=0, min_improvement=1e9, progress=False)
    ).fit(model, x)
    assert history.stopped_early and len(history.train_loss) == 2 and history.best_epoch == 0


def test_plots_draw_and_write_only_when_asked(tmp_path):
    from dklscope.embeddings.plots import class_map, latent_map, traversal_codes, traversal_grid

    image = np.random.default_rng(0).random((20, 20))
    rows, cols = np.array([2.0, 10.0, 15.0]), np.array([3.0, 12.0, 8.0])
    fig = latent_map(image, rows, cols, np.array([0.1, 0.5, -0.2]))
    assert len(fig.axes) == 2  # the image and its colour bar
    assert list(tmp_path.iterdir()) == []
    class_map(image, rows, cols, np.array([0, 1, 1]), path=tmp_path / "classes.png")
    assert (tmp_path / "classes.png").stat().st_size > 0
    codes = traversal_codes(3, dims=(0, 2), n=4)
    assert codes.shape == (16, 3) and (codes[:, 1] == 0).all()
    assert codes[0, 0] == -2.0 and codes[3, 0] == 2.0 and codes[0, 2] == 2.0
    decoded = np.arange(16, dtype=float)[:, None, None, None] * np.ones((16, 1, 5, 5))
    fig = traversal_grid(decoded)
    tiles = fig.axes[0].images[0].get_array()
    assert tiles.shape == (20, 20) and tiles[0, 5] == 1.0 and tiles[5, 0] == 4.0


def _trait_set(n=1500, seed=3):
    """Upright motifs whose one content variable, the trait (a stretch in pixels), is known."""
    trait = np.random.default_rng(seed).uniform(-1, 1.5, n)
    return motif_patches(n, seed=seed, trait=trait), trait


def _abs_corr(z, trait):
    return max(abs(np.corrcoef(z[:, i], trait)[0, 1]) for i in range(z.shape[1]))


def _information(encoding):
    """How much the code tells patches apart: the spread of the posterior means over the
    posterior's own width (>> 1: informative; << 1: every patch gets about the prior)."""
    return float(encoding.z_loc.std(axis=0).max() / encoding.z_scale.mean())


def test_a_conditional_vae_leaves_the_given_condition_out_of_its_latents():
    """A VAE must put the trait in its latent; a CVAE told the trait need not, and its one
    latent then carries almost nothing, while decoding one code under two conditions gives two
    different patches."""
    x, trait = _trait_set()
    plain = build_embedding(EmbeddingConfig(kind="vae", latent_dim=1, trainer=TRAINER))
    plain.fit(x)
    condition = ((trait - trait.mean()) / trait.std())[:, None].astype(np.float32)
    cvae = build_embedding(
        EmbeddingConfig(kind="cvae", latent_dim=1, condition_dim=1, trainer=TRAINER)
    )
    cvae.fit(x, condition)
    assert _abs_corr(plain.encode(x).z_loc, trait) > 0.9
    assert _information(plain.encode(x)) > 5
    assert _information(cvae.encode(x, condition)) < 1
    code = np.zeros((1, 1), np.float32)
    low, high = (cvae.decode(code, np.array([[c]], np.float32)) for c in (-1.5, 1.5))
    assert np.abs(high - low).max() > 0.3  # in the patches' units, whose peak is about 1


def test_a_convolutional_encoder_and_decoder_learn_the_trait():
    x, trait = _trait_set()
    conv = build_embedding(
        EmbeddingConfig(
            kind="vae",
            latent_dim=1,
            encoder="conv",
            decoder="conv",
            hidden=(16, 32),
            trainer=TRAINER,
        )
    )
    conv.fit(x)
    assert _abs_corr(conv.encode(x).z_loc, trait) > 0.9

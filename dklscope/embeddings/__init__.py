"""From images to a model's inputs: patches, atoms and the structural embeddings.

`patches` cuts patches on a grid (the campaign's candidates) or around any centres;
`atoms` finds atoms (local maxima, Laplacian-of-Gaussian blobs) to centre them on.

The embeddings are the VAE family in Pyro, one model per module, each a Pyro
``model``/``guide`` pair with its networks: `vae.VAE` (VAE, and rVAE with rotation /
translation / scale latents), `jvae.JVAE` (jVAE, jrVAE), `ssvae.SSVAE`, `cvae.ConditionalVAE`,
`shiftvae.ShiftVAE` (1-D spectra), `ved.VED` (im2spec, spec2im). `trainer.SVITrainer` trains
any of them; `io` saves and loads them; `embedding.ModelEmbedding` wraps a model and its
trainer behind the `Embedding` protocol; `plots` draws latent maps, traversals and class maps.
"""

from .atoms import AtomFinder, Atoms, LocalMaxima, LoGBlobs, find_atoms, refine_positions
from .base import Embedding, Encoding
from .embedding import EmbeddingConfig, ModelEmbedding, build_embedding
from .patches import (
    Normalisation,
    Patches,
    PatchSet,
    atom_patches,
    extract_patches,
    grid_patch_set,
    grid_patches,
)
from .trainer import SVITrainer, TrainerConfig, TrainingHistory

__all__ = [
    "AtomFinder",
    "Atoms",
    "Embedding",
    "EmbeddingConfig",
    "Encoding",
    "LoGBlobs",
    "LocalMaxima",
    "ModelEmbedding",
    "Normalisation",
    "PatchSet",
    "Patches",
    "SVITrainer",
    "TrainerConfig",
    "TrainingHistory",
    "atom_patches",
    "build_embedding",
    "extract_patches",
    "find_atoms",
    "grid_patch_set",
    "grid_patches",
    "refine_positions",
]

"""Structural embeddings of patches: the VAE family in Pyro.

Models (one per module, each a Pyro ``model``/``guide`` pair with its networks):
`vae.VAE` (VAE, and rVAE with rotation / translation / scale latents), `jvae.JVAE` (jVAE,
jrVAE), `ssvae.SSVAE`, `cvae.ConditionalVAE`, `shiftvae.ShiftVAE` (1-D spectra), `ved.VED`
(im2spec, spec2im). `trainer.SVITrainer` trains any of them; `io` saves and loads them;
`embedding.ModelEmbedding` wraps a model and its trainer behind the `Embedding` protocol;
`plots` draws latent maps, traversals and class maps.
"""

from .base import Embedding, Encoding
from .embedding import EmbeddingConfig, ModelEmbedding, build_embedding
from .trainer import SVITrainer, TrainerConfig, TrainingHistory

__all__ = [
    "Embedding",
    "EmbeddingConfig",
    "Encoding",
    "ModelEmbedding",
    "SVITrainer",
    "TrainerConfig",
    "TrainingHistory",
    "build_embedding",
]

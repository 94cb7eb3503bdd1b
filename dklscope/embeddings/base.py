"""What every embedding returns (`Encoding`) and what it must do (the `Embedding` protocol)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Encoding:
    """The approximate posterior of each patch's latents: means (``*_loc``) and standard
    deviations (``*_scale``), numpy arrays with N patches in the first dimension.

    ``z_*`` (N, d): the content latents, invariant to the transforms below; use these as
    structural features. The transform latents are reported apart, each ``None`` when the model
    does not have it: ``angle_*`` (N,) radians, the patch's rotation from the learned canonical
    orientation, from +x (columns) towards +y (rows); ``offset_*`` (N, 2) pixels (row, col);
    ``log_scale_*`` (N,), the log of the patch's magnification; ``shift_*`` (N,) spectral
    channels. ``class_probs`` (N, K): q(class | patch) of the models with a class latent.
    """

    z_loc: np.ndarray
    z_scale: np.ndarray
    angle_loc: np.ndarray | None = None
    angle_scale: np.ndarray | None = None
    offset_loc: np.ndarray | None = None
    offset_scale: np.ndarray | None = None
    log_scale_loc: np.ndarray | None = None
    log_scale_scale: np.ndarray | None = None
    shift_loc: np.ndarray | None = None
    shift_scale: np.ndarray | None = None
    class_probs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.z_loc)

    @property
    def code(self) -> np.ndarray:
        """The full latent code of the means, (N, d + transforms), in the order ``decode``
        takes it: content, angle, offset (row, col), log-scale, shift (those present)."""
        parts = [self.z_loc]
        for name in ("angle_loc", "offset_loc", "log_scale_loc", "shift_loc"):
            value = getattr(self, name)
            if value is not None:
                parts.append(value.reshape(len(self), -1))
        return np.concatenate(parts, axis=1)

    @property
    def classes(self) -> np.ndarray | None:
        """The most probable class of each patch, (N,), or ``None`` without a class latent."""
        return None if self.class_probs is None else self.class_probs.argmax(axis=1)

    @staticmethod
    def concatenate(parts: list[Encoding]) -> Encoding:
        """One encoding of the patches of ``parts``, in order."""
        values: dict[str, Any] = {}
        for f in fields(Encoding):
            items = [getattr(p, f.name) for p in parts]
            values[f.name] = None if items[0] is None else np.concatenate(items)
        return Encoding(**values)


@runtime_checkable
class Embedding(Protocol):
    """A structural embedding of patches: trained on a set of patches, then encodes any.

    ``patches`` is a `dklscope.embeddings.patches.PatchSet` or an array (N, C, H, W) (or
    (N, H, W) for one channel), in the units the embedding was trained on.
    """

    def fit(self, patches: Any) -> Any: ...

    def encode(self, patches: Any) -> Encoding: ...

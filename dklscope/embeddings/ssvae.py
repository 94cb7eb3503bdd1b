"""ssVAE: the jVAE's class latent, observed where a label is known (semi-supervised).

For a labelled patch the class is observed in the model and the ELBO is log p(x, y) bound;
for an unlabelled one the class is summed out as in `dklscope.embeddings.jvae`. As in Kingma et
al.'s M2 model, the classifier q(y | x) also gets a cross-entropy term on the labelled patches,
weighted by ``classifier_weight`` (nats per labelled patch), so the few labels train it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import Tensor

from .jvae import JVAE, JVAEConfig


@dataclass(frozen=True)
class SSVAEConfig(JVAEConfig):
    """`JVAEConfig` plus the weight of the labelled patches' classification loss."""

    classifier_weight: float = 100.0


class SSVAE(JVAE):
    """ssVAE of `SSVAEConfig`. ``loss(x, y)``: ``y`` (B,) integer labels, -1 where unknown."""

    kind: ClassVar[str] = "ssvae"
    config_class: ClassVar[type] = SSVAEConfig
    config: SSVAEConfig

    def _build(self) -> None:
        super()._build()
        self._labelled_elbo = Trace_ELBO(max_plate_nesting=1)  # nothing to enumerate there

    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if y is None:
            return super().loss(x)
        labelled = y >= 0
        total = x.new_zeros(())
        if (~labelled).any():
            total = total + self.elbo.differentiable_loss(self.model, self.guide, x[~labelled])
        if labelled.any():
            xl, yl = x[labelled], y[labelled].long()
            onehot = F.one_hot(yl, self.config.n_classes).to(x.dtype)
            total = total + self._labelled_elbo.differentiable_loss(
                self.model, self.guide, xl, onehot
            )
            logits = self.classifier(self._features(xl))
            ce = F.cross_entropy(logits, yl, reduction="sum")
            total = total + self.config.classifier_weight * ce
        return total / x.shape[0]

    @torch.no_grad()
    def classify(self, x: Tensor) -> Tensor:
        """The most probable class of each patch of x, (B,)."""
        return self.classifier(self._features(x)).argmax(-1)

"""Train any model of `dklscope.embeddings` by stochastic variational inference.

`SVITrainer` minimises a model's ``loss(*batch)`` (the negative ELBO per sample, computed by a
Pyro ELBO from the model's ``model``/``guide`` pair) with Adam over minibatches, holds out a
fraction of the data to measure the ELBO on, stops early when that stops improving and keeps
the best weights. The model owns its parameters: nothing goes through Pyro's global parameter
store, and every random draw (shuffling, the guide's samples) happens inside `isolated_rng`,
so the process' random state is the same after a fit as before it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class TrainableModel(Protocol):
    """What the trainer needs: parameters and the mean negative ELBO of a batch (a scalar)."""

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def loss(self, *batch: Tensor) -> Tensor: ...

    def to(self, device: torch.device) -> nn.Module: ...


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's generators (CPU, and the CUDA device if ``device`` is one) with ``seed``
    inside the block and restore their states afterwards."""
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


@dataclass(frozen=True)
class TrainerConfig:
    """``epochs``: at most this many passes over the training data; ``batch_size`` patches per
    Adam step at ``learning_rate``. ``validation_fraction`` of the data (chosen by ``seed``)
    is held out to measure the ELBO after each epoch; training stops after ``patience``
    epochs without an improvement of ``min_improvement`` (nats per sample) and the best
    epoch's weights are kept (``patience=None``: run every epoch). ``device``: where the model
    and data live. ``progress``: show a progress bar."""

    epochs: int = 100
    batch_size: int = 100
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    patience: int | None = 10
    min_improvement: float = 0.0
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs >= 0, batch_size >= 1 and learning_rate > 0 are required")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in [0, 1)")


@dataclass
class TrainingHistory:
    """Per epoch: the mean training loss (negative ELBO, nats per sample), the held-out loss
    (empty without a held-out set) and the wall time in seconds."""

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    @property
    def s_per_epoch(self) -> float:
        """The median wall time of an epoch, in seconds."""
        return float(np.median(self.seconds)) if self.seconds else math.nan


class SVITrainer:
    """Fits models by SVI as `TrainerConfig` says; one trainer can fit many models."""

    def __init__(self, config: TrainerConfig | None = None) -> None:
        self.config = config or TrainerConfig()

    def fit(self, model: TrainableModel, *arrays: np.ndarray | Tensor) -> TrainingHistory:
        """Train ``model`` in place on ``arrays`` (each with the N samples first, passed to
        ``model.loss`` batch by batch); returns the history. The model ends on the device."""
        cfg = self.config
        device = torch.device(cfg.device)
        model.to(device)
        data = [_tensor(a, device) for a in arrays]
        n = len(data[0])
        shuffle = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(n, generator=shuffle)
        n_val = round(cfg.validation_fraction * n) if n > 1 else 0
        val_idx, train_idx = order[:n_val].to(device), order[n_val:]
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        history = TrainingHistory()
        best, best_state, waited = math.inf, None, 0
        with isolated_rng(cfg.seed, device), _progress(cfg.progress, cfg.epochs) as bar:
            for epoch in range(cfg.epochs):
                start = time.perf_counter()
                perm = train_idx[torch.randperm(len(train_idx), generator=shuffle)].to(device)
                total = 0.0
                for i in range(0, len(perm), cfg.batch_size):
                    idx = perm[i : i + cfg.batch_size]
                    optimizer.zero_grad()
                    loss = model.loss(*(d[idx] for d in data))
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(idx)
                history.train_loss.append(total / max(len(perm), 1))
                if n_val:
                    history.validation_loss.append(self._mean_loss(model, data, val_idx))
                history.seconds.append(time.perf_counter() - start)
                current = history.validation_loss[-1] if n_val else history.train_loss[-1]
                if current < best - cfg.min_improvement:
                    best, waited, history.best_epoch = current, 0, epoch
                    best_state = copy.deepcopy(model.state_dict())  # type: ignore[attr-defined]
                else:
                    waited += 1
                log.debug(
                    "epoch %d: train %.4g, held-out %.4g", epoch, history.train_loss[-1], current
                )
                bar(epoch, history.train_loss[-1], current)
                if cfg.patience is not None and waited > cfg.patience:
                    history.stopped_early = True
                    break
        if best_state is not None:
            model.load_state_dict(best_state)  # type: ignore[attr-defined]
        return history

    def evaluate(self, model: TrainableModel, *arrays: np.ndarray | Tensor) -> float:
        """The mean negative ELBO (nats per sample) of ``model`` on ``arrays``: one sample of
        the guide per data point, drawn from ``seed``. Changes no parameter and no global
        random state."""
        device = next(iter(model.parameters())).device
        data = [_tensor(a, device) for a in arrays]
        with isolated_rng(self.config.seed, device):
            return self._mean_loss(model, data, torch.arange(len(data[0]), device=device))

    def _mean_loss(self, model: TrainableModel, data: list[Tensor], index: Tensor) -> float:
        # Not under no_grad: Pyro's TraceEnum_ELBO refuses to compute a differentiable loss
        # there. No step is taken, so no parameter changes.
        total = 0.0
        for i in range(0, len(index), self.config.batch_size):
            idx = index[i : i + self.config.batch_size]
            total += model.loss(*(d[idx] for d in data)).detach().item() * len(idx)
        return total / max(len(index), 1)


def _tensor(a: np.ndarray | Tensor, device: torch.device) -> Tensor:
    t = torch.as_tensor(a)
    if t.is_floating_point():
        t = t.to(torch.float32)
    return t.to(device)


@contextlib.contextmanager
def _progress(enabled: bool, epochs: int) -> Iterator:
    if not enabled:
        yield lambda *args: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("training", total=epochs)

        def update(epoch: int, train: float, held_out: float) -> None:
            progress.update(
                task,
                completed=epoch + 1,
                description=f"epoch {epoch + 1}: -ELBO {train:.4g} (held out {held_out:.4g})",
            )

        yield update

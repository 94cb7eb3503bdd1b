"""Starting a campaign on its journal, new or recorded: a new journal gets the instrument's
description and overview, the config and the software versions (`record_start`); a recorded one
is read back (`read_recorded`, `instrument_and_overview`) and checked against the instrument it
goes on with. Also what every start checks and rebuilds: the config against the instrument
(`check_config_against`) and the embedding behind the model's inputs (`campaign_embedding`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dklscope.config import Config, ConfigError, from_dict
from dklscope.drivers import InstrumentDescription, MicroscopeClient
from dklscope.model.scalarizers import check_scalarizer

from .journal import JOURNAL_NAME, Journal

if TYPE_CHECKING:
    from dklscope.embeddings import ModelEmbedding

log = logging.getLogger(__name__)


class CampaignError(Exception):
    """The campaign cannot go on with this instrument or journal (say which and why)."""


def read_recorded(folder: str | Path) -> tuple[Config, Journal]:
    """The config and the journal (opened read-only) of the campaign recorded in ``folder``."""
    folder = Path(folder)
    path = folder / JOURNAL_NAME
    if not path.is_file():
        raise CampaignError(f"{folder} holds no {JOURNAL_NAME}")
    journal = Journal(path, read_only=True)
    try:
        config = from_dict(Config, journal.metadata("config"))
    except (KeyError, ConfigError) as exc:
        journal.close()
        raise CampaignError(f"{path}: no readable config: {exc}") from None
    return config, journal


def instrument_and_overview(
    journal: Journal, client: MicroscopeClient | None
) -> tuple[InstrumentDescription, np.ndarray]:
    """The instrument's description and the reference overview: read back from ``journal``
    when it holds a campaign (and checked against ``client``'s instrument, if any), else asked
    of ``client``."""
    if not journal.is_new:
        description = InstrumentDescription.from_dict(journal.metadata("instrument"))
        overview = np.asarray(journal.array("overview"), dtype=np.float64)
        if client is not None:
            _check_same_instrument(description, client.describe())
        return description, overview
    if client is None:
        raise CampaignError(f"{journal.path} holds no campaign to read")
    return client.describe(), np.asarray(client.get_overview(), dtype=np.float64)


def record_start(
    journal: Journal,
    config: Config,
    config_text: str,
    description: InstrumentDescription,
    overview: np.ndarray,
) -> None:
    """Write what a new campaign starts from to its ``journal``, in one transaction."""
    with journal.transaction():
        journal.set_metadata("config", config.to_dict())
        journal.set_metadata("config_text", config_text)
        journal.set_metadata("instrument", description.to_dict())
        journal.set_metadata("versions", _versions())
        journal.set_array("overview", overview.astype(np.float32))


def _check_same_instrument(journaled: InstrumentDescription, now: InstrumentDescription) -> None:
    for key in ("name", "overview_shape", "pixel_size", "spectral_axis"):
        if getattr(journaled, key) != getattr(now, key):
            raise CampaignError(
                f"the instrument differs from the journal's: {key} was "
                f"{getattr(journaled, key)!r}, is {getattr(now, key)!r}"
            )


def campaign_embedding(
    config: Config,
    patches: np.ndarray,
    journal: Journal,
    path: str | Path | None,
    resuming: bool,
) -> ModelEmbedding:
    """The embedding ``config.embedding`` asks for: read from its file (or, resuming, from
    ``path``), or trained on the standardised candidate ``patches`` (N, size, size) and, with
    ``path``, saved there."""
    from dklscope.embeddings import EmbeddingConfig, ModelEmbedding, TrainerConfig, build_embedding

    section = config.embedding
    if section.load is not None:
        embedding = ModelEmbedding.load(section.load)
        log.info("embedding read from %s", section.load)
        return embedding
    if resuming:
        if path is None or not Path(path).is_file():
            raise CampaignError(
                f"the campaign's embedding {path} is missing: the model's inputs cannot be rebuilt"
            )
        return ModelEmbedding.load(path)
    embedding = build_embedding(
        EmbeddingConfig(
            kind=section.kind,
            latent_dim=section.latent_dim,
            seed=config.seed,
            trainer=TrainerConfig(epochs=section.epochs, seed=config.seed, progress=False),
        )
    )
    started = time.perf_counter()
    history = embedding.fit(patches[:, None].astype(np.float32))
    log.info(
        "%s trained on %d patches in %.1f s",
        section.kind,
        len(patches),
        time.perf_counter() - started,
    )
    journal.set_metadata("embedding_training", dataclasses.asdict(history))
    if path is not None:
        embedding.save(path)
    return embedding


def check_config_against(config: Config, description: InstrumentDescription) -> None:
    """Refuse, with a `ConfigError` naming the key, what this instrument cannot do."""
    if (why := description.check_dwell(config.dwell_s)) is not None:
        raise ConfigError("dwell_s", f"{why} of {description.name}")
    if config.dose.limited:
        if description.dose_per_s is None:
            raise ConfigError(
                "dose",
                f"{description.name} keeps no dose account (it does not describe dose_units: "
                "a driver before protocol 1.2?), so a dose budget cannot be enforced; remove "
                "it, or budget seconds of exposure with budget.dose_s",
            )
        per_point = config.dwell_s * description.dose_per_s
        limit = config.dose.per_point
        if limit is not None and per_point > limit * (1 + 1e-9):
            units = description.dose_units
            raise ConfigError(
                "dose.per_point",
                f"a point of dwell_s {config.dwell_s:g} s delivers {per_point:g} {units} on "
                f"{description.name}, over the {limit:g} {units} allowed: shorten dwell_s "
                f"to at most {limit / description.dose_per_s:g} s",
            )
    axis = description.spectral_axis
    check_scalarizer(config.scalarizer, axis.values(), axis.units)
    for name, scalarizer in config.predict.items():
        check_scalarizer(scalarizer, axis.values(), axis.units, key=f"predict.{name}")
    if config.patches.size > min(description.overview_shape):
        raise ConfigError(
            "patches.size",
            f"{config.patches.size} does not fit the overview {list(description.overview_shape)}",
        )


def _versions() -> dict[str, str]:
    names = ("dklscope", "torch", "gpytorch", "botorch", "numpy", "pyzmq")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions

"""A stand-in for a campaign read back from its journal (``Campaign.from_journal``): the
attributes `dklscope.observe.report` and `dklscope.observe.export` read, over hand-made
measurements with known positions, spectra, scalars, statuses and times, journaled to a real
`Journal` on disk.

`HISTORY` (8 attempts, 7 decisions), in journal order:

=== ======== ====== ======== ======= ====== ====== =====
seq decision kind   status   scalar  busy_s idle_s lat_s
=== ======== ====== ======== ======= ====== ====== =====
0   0        seed   ok       3.0     1.0    None   0.0
1   1        seed   ok       1.0     1.0    0.5    0.0
2   2        policy retried  NaN     0.5    0.25   0.2   (no spectrum, no read-back)
3   2        policy ok       5.0     1.0    0.0    0.2   (the best)
4   3        policy failed   NaN     2.0    1.0    0.4   (no spectrum)
5   4        policy ok       NaN     1.0    0.25   0.1   (a NaN spectrum)
6   5        policy ok       2.0     1.0    None   0.3   (first of a resumed run)
7   6        policy ok       4.0     1.5    0.5    0.5
=== ======== ====== ======== ======= ====== ====== =====

``busy_s`` is ``t_done - t_requested``; a request follows the previous reply after ``idle_s``
(100 s for the first of the resumed run).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dklscope.campaign.journal import Journal, Measurement
from dklscope.config import parse_config
from dklscope.drivers import InstrumentDescription, SpectralAxis
from dklscope.embeddings.patches import grid_patches
from dklscope.model.scalarizers import build_scalarizer

CONFIG_TEXT = """
seed: 3
dwell_s: 0.05
instrument:
  simulator: {shape: [16, 16], seed: 1, noise: false}
budget: {seed_points: 2, steps: 5}
patches: {size: 4, stride: 2}
scalarizer: {window: [0.6, 1.2]}
"""

CHANNELS = 16
DESCRIPTION = InstrumentDescription(
    name="stub microscope",
    overview_shape=(16, 16),
    pixel_size=0.25,
    pixel_units="nm",
    spectral_axis=SpectralAxis(size=CHANNELS, offset=0.5, scale=0.1, units="eV"),
    spectrum_units="counts",
    dwell_range_s=(1e-4, 10.0),
)

#      seq: decision, kind, status, scalar, busy_s, idle_s, latency_s, candidate
ROWS = [
    (0, "seed", "ok", 3.0, 1.0, None, 0.0, 7),
    (1, "seed", "ok", 1.0, 1.0, 0.5, 0.0, 30),
    (2, "policy", "retried", math.nan, 0.5, 0.25, 0.2, 12),
    (2, "policy", "ok", 5.0, 1.0, 0.0, 0.2, 12),
    (3, "policy", "failed", math.nan, 2.0, 1.0, 0.4, 20),
    (4, "policy", "ok", math.nan, 1.0, 0.25, 0.1, 5),
    (5, "policy", "ok", 2.0, 1.0, None, 0.3, 33),
    (6, "policy", "ok", 4.0, 1.5, 0.5, 0.5, 0),
]
T0 = 1_700_000_000.0


def measurement(seq: int, **fields) -> Measurement:
    """A measurement with every field of the schema; ``fields`` override the defaults."""
    defaults = dict(
        seq=seq,
        decision=seq,
        kind="policy",
        candidate=seq,
        x=float(seq),
        y=2.0 * seq,
        x_read=float(seq) + 0.1,
        y_read=2.0 * seq - 0.1,
        dwell_s=0.05,
        spectrum=np.full(CHANNELS, seq, dtype=np.float32),
        scalar=float(seq),
        acquisition_value=None,
        predicted_mean=None,
        predicted_std=None,
        t_decided=T0 + seq,
        t_acquired=T0 + seq + 0.5,
        decision_latency_s=0.01,
    )
    return Measurement(**{**defaults, **fields})


def history(patches) -> list[Measurement]:
    """`ROWS` as measurements at the candidates' positions; spectra are seeded noise."""
    rng = np.random.default_rng(0)
    out, t_done = [], T0
    for seq, (decision, kind, status, scalar, busy, idle, latency, candidate) in enumerate(ROWS):
        t_requested = t_done + (100.0 if idle is None else idle)
        t_done = t_requested + busy
        x, y = float(patches.cols[candidate]), float(patches.rows[candidate])
        spectrum = rng.uniform(0.0, 10.0, CHANNELS).astype(np.float32)
        if status != "ok":
            spectrum = np.zeros(0, dtype=np.float32)
        elif math.isnan(scalar):
            spectrum[3] = np.nan
        policy = kind == "policy"
        out.append(
            measurement(
                seq,
                decision=decision,
                kind=kind,
                candidate=candidate,
                x=x,
                y=y,
                x_read=math.nan if status == "retried" else x + 0.125,
                y_read=math.nan if status == "retried" else y - 0.25,
                spectrum=spectrum,
                scalar=scalar,
                acquisition_value=0.1 * seq if policy else None,
                predicted_mean=1.5 * seq if policy else None,
                predicted_std=0.5 if policy else None,
                t_decided=t_requested - 0.01,
                t_acquired=t_done - 0.001 if status == "ok" else math.nan,
                decision_latency_s=latency,
                status=status,
                attempt=1 if seq == 3 else 0,
                error=None if status == "ok" else "timeout",
                t_requested=t_requested,
                t_done=t_done,
                idle_s=idle,
            )
        )
    return out


class FakeEmbedding:
    """``encode`` gives the first ``dim`` pixels of each patch as its latents; keeps its input."""

    def __init__(self, dim: int = 3) -> None:
        self.dim, self.seen = dim, None

    def encode(self, patches: np.ndarray) -> SimpleNamespace:
        self.seen = patches
        return SimpleNamespace(z_loc=patches.reshape(len(patches), -1)[:, : self.dim].copy())


class StubCampaign:
    """What ``Campaign.from_journal`` gives, over ``journal`` (its measurements as history)."""

    def __init__(self, journal: Journal, *, embedding: FakeEmbedding | None = None) -> None:
        self.config = parse_config(CONFIG_TEXT)
        self.description = DESCRIPTION
        self.journal = journal
        self.overview = np.asarray(journal.array("overview"), dtype=np.float64)
        self.patches = grid_patches(
            self.overview, self.config.patches.size, stride=self.config.patches.stride
        )
        self.axis = DESCRIPTION.spectral_axis.values()
        self.candidates = self.patches.data.reshape(len(self.patches), -1)
        self.embedding = embedding
        self.scalarizer = build_scalarizer(self.config.scalarizer)
        self.history = journal.measurements()
        self.predict_calls = 0

    def best(self) -> Measurement | None:
        good = [m for m in self.history if m.ok and math.isfinite(m.scalar)]
        return max(good, key=lambda m: m.scalar, default=None)

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``0.5 * index`` and std ``1 + index / N`` at candidate ``index``."""
        self.predict_calls += 1
        n = len(self.patches)
        return 0.5 * np.arange(n, dtype=np.float64), 1.0 + np.arange(n) / n

    def predict_outputs(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`predict` as the map of the one output, ``scalar``."""
        return {"scalar": self.predict()}


def journal_with(path: str | Path, measurements: list[Measurement] | None = None) -> Journal:
    """A journal at ``path`` with the stub's overview (and two re-acquired ones, numbered 10
    and 2, to check their order), metadata, an event and ``measurements`` (default: `history`).
    """
    journal = Journal(path)
    overview = np.random.default_rng(1).uniform(0, 1, DESCRIPTION.overview_shape)
    journal.set_array("overview", overview.astype(np.float32))
    journal.set_array("overview.10", (overview + 2).astype(np.float32))
    journal.set_array("overview.2", (overview + 1).astype(np.float32))
    journal.set_metadata("config", parse_config(CONFIG_TEXT).to_dict())
    journal.set_metadata("config_text", CONFIG_TEXT)
    journal.set_metadata("instrument", DESCRIPTION.to_dict())
    journal.set_metadata("versions", {"dklscope": "test"})
    journal.log_event("drift", shift_px=[0.5, -0.25])
    if measurements is None:
        patches = grid_patches(overview, 4, stride=2)
        measurements = history(patches)
    for m in measurements:
        journal.record(m)
    return journal

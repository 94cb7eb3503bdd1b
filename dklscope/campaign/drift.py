"""The specimen's drift under the probe: estimated by registering a re-acquired overview to the
reference one (phase correlation), journaled as a ``drift`` event and restored from the last
one; every later move is shifted by it, and the candidates it takes out of reach are
unavailable."""

from __future__ import annotations

import logging

import numpy as np

from dklscope.drivers import InstrumentDescription

from .journal import Journal
from .resume import CampaignError

log = logging.getLogger(__name__)


class Drift:
    """The specimen's displacement ``px`` (dx, dy; overview pixels) since the reference
    overview, as the last correction journaled in ``journal`` found it, for the candidates at
    ``positions``: ``out_of_reach`` marks those it puts where the probe may not go,
    ``checked_at`` is the number of measurements at the last correction."""

    def __init__(
        self, description: InstrumentDescription, positions: np.ndarray, journal: Journal
    ) -> None:
        self.description, self.positions, self.journal = description, positions, journal
        drifts = journal.events("drift")
        self.set((drifts[-1]["dx"], drifts[-1]["dy"]) if drifts else (0.0, 0.0))
        self.checked_at = drifts[-1]["after_seq"] if drifts else 0

    def set(self, px: tuple[float, float]) -> None:
        """Shift later moves by ``px`` (dx, dy); find the candidates it puts out of reach
        once here, not at every decision."""
        self.px = px
        self.out_of_reach = np.zeros(len(self.positions), dtype=bool)
        if px != (0.0, 0.0):
            dx, dy = px
            check = self.description.check_position
            self.out_of_reach[:] = [check(x + dx, y + dy) is not None for x, y in self.positions]

    def correct(
        self, reference: np.ndarray, image: np.ndarray, measurements: int
    ) -> tuple[float, float]:
        """Register the re-acquired overview ``image`` to the ``reference`` one by phase
        correlation and shift every later move by the specimen's displacement ``(dx, dy)``;
        journaled (the image as ``overview.N``, the shift as a ``drift`` event after
        ``measurements``)."""
        from skimage.registration import phase_cross_correlation

        if image.shape != reference.shape:
            raise CampaignError(
                f"the re-acquired overview is {image.shape}, the reference {reference.shape}"
            )
        shift, error, _ = phase_cross_correlation(reference, image, upsample_factor=20)
        dy, dx = -float(shift[0]), -float(shift[1])  # the content moved by (dx, dy)
        n = len(self.journal.events("drift")) + 1
        with self.journal.transaction():
            self.journal.set_array(f"overview.{n}", image.astype(np.float32))
            self.journal.log_event(
                "drift", dx=dx, dy=dy, error=float(error), after_seq=measurements, image=n
            )
        self.set((dx, dy))
        self.checked_at = measurements
        log.info("drift: the specimen moved by (dx=%.2f, dy=%.2f) px", dx, dy)
        return dx, dy

"""Overview pixels <-> Nion's normalised probe positions (no Nion needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dklscope.drivers.nion_swift.geometry import ScanGeometry


def test_pixel_centres_sit_at_the_middle_of_their_normalised_cells():
    g = ScanGeometry(shape=(4, 8), fov_nm=80.0)  # rows, cols
    assert g.to_normalised(0, 0) == (0.125, 0.0625)  # (y, x): half a pixel in from the corner
    assert g.to_normalised(7, 3) == (0.875, 0.9375)  # the last pixel, bottom right
    assert g.to_normalised(-0.5, -0.5) == (0.0, 0.0)  # the frame's top-left corner
    assert g.to_normalised(7.5, 3.5) == (1.0, 1.0)  # its bottom-right corner
    assert g.to_normalised(2, 1) == (0.375, 0.3125)  # y follows the row, x the column


def test_pixel_size_and_field_of_view_follow_the_longer_side():
    wide = ScanGeometry(shape=(48, 80), fov_nm=300.0)  # Nion: fov_nm is the width here
    assert wide.pixel_size_nm == 3.75
    assert wide.field_of_view_nm == (300.0, 180.0)  # (width, height)
    tall = ScanGeometry(shape=(80, 48), fov_nm=300.0)
    assert tall.field_of_view_nm == (180.0, 300.0)


def test_probe_limits_are_every_pixel_centre():
    assert ScanGeometry(shape=(48, 80), fov_nm=1.0).probe_limits == (0.0, 79.0, 0.0, 47.0)


@given(
    rows=st.integers(1, 2048),
    cols=st.integers(1, 2048),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
)
def test_the_round_trip_returns_the_pixel(rows, cols, fx, fy):
    g = ScanGeometry(shape=(rows, cols), fov_nm=100.0)
    x, y = fx * (cols - 1), fy * (rows - 1)
    ny, nx = g.to_normalised(x, y)
    assert 0 < ny < 1 and 0 < nx < 1  # inside the frame: the kit clamps to [0, 1]
    back = g.from_normalised(ny, nx)
    assert back == pytest.approx((x, y), abs=1e-9 * max(rows, cols))


@pytest.mark.parametrize(
    ("shape", "fov_nm"), [((0, 4), 10.0), ((4, 4), 0.0), ((4, 4), float("nan"))]
)
def test_an_impossible_frame_is_refused(shape, fov_nm):
    with pytest.raises(ValueError, match=r"scan shape|field of view"):
        ScanGeometry(shape=shape, fov_nm=fov_nm)


def test_a_changed_scan_context_compares_unequal():
    g = ScanGeometry(shape=(64, 64), fov_nm=200.0)
    assert g == ScanGeometry(shape=(64, 64), fov_nm=200.0)
    assert g != ScanGeometry(shape=(64, 64), fov_nm=200.0, rotation_rad=0.1)
    assert g != ScanGeometry(shape=(64, 64), fov_nm=200.0, center_nm=(5.0, 0.0))

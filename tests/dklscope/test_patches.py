import numpy as np
import pytest

from dklscope.patches import grid_patches


@pytest.mark.parametrize("size", [3, 4, 7])
@pytest.mark.parametrize("edge", ["reflect", "drop"])
def test_each_patch_is_the_image_around_its_centre(size, edge):
    image = np.random.default_rng(0).normal(size=(13, 17))
    padded = np.pad(image, size, mode="reflect")
    p = grid_patches(image, size, stride=1, edge=edge)
    before = size // 2
    for i in range(len(p)):
        r, c = p.rows[i] + size, p.cols[i] + size  # in padded coordinates
        expected = padded[r - before : r - before + size, c - before : c - before + size]
        np.testing.assert_array_equal(p.data[i], expected)
    if edge == "reflect":
        assert len(p) == image.size
        assert p.grid_shape == image.shape
    else:
        assert p.rows.min() == before and p.rows.max() == 13 - size + before
        assert p.grid_shape == (13 - size + 1, 17 - size + 1)


def test_stride_and_grid_shape_let_values_reshape_to_a_map():
    image = np.arange(20 * 30, dtype=float).reshape(20, 30)
    p = grid_patches(image, 5, stride=3)
    assert p.grid_shape == (7, 10)
    centre = p.data[:, 2, 2].reshape(p.grid_shape)
    np.testing.assert_array_equal(centre, image[::3, ::3])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        grid_patches(np.zeros((8, 8)), 9)
    with pytest.raises(ValueError, match="2-D"):
        grid_patches(np.zeros((8, 8, 2)), 3)
    with pytest.raises(ValueError, match="edge"):
        grid_patches(np.zeros((8, 8)), 3, edge="wrap")

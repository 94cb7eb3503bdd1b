import numpy as np
import pytest

from dklscope.embeddings.patches import extract_patches, grid_patch_set, grid_patches


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


# --- extract_patches / grid_patch_set ------------------------------------------------------


@pytest.mark.parametrize("edge", ["drop", "pad", "reflect"])
def test_edge_policy_keeps_the_index_map(edge):
    image = np.arange(10 * 12, dtype=float).reshape(10, 12)
    rows, cols = np.array([0, 5, 9, 5]), np.array([0, 6, 11, 1])
    p = extract_patches(image, rows, cols, 5, edge=edge, pad_value=-1.0)
    if edge == "drop":
        np.testing.assert_array_equal(p.index, [1])  # only the middle centre fits wholly
    else:
        np.testing.assert_array_equal(p.index, [0, 1, 2, 3])
    for i, k in enumerate(p.index):
        assert p.data[i, 0, 2, 2] == image[rows[k], cols[k]]  # every patch on its own centre
    values = p.scatter(p.data[:, 0, 2, 2])
    assert values.shape == (4,)
    np.testing.assert_array_equal(np.isnan(values), edge == "drop" and np.array([1, 0, 1, 1]))
    if edge == "pad":
        assert p.data[0, 0, 0, 0] == -1.0
    if edge == "reflect":
        assert p.data[0, 0, 0, 0] == image[2, 2]


def test_stacks_channels_units_and_recorded_normalisation():
    rng = np.random.default_rng(0)
    stack = rng.normal(3.0, 2.0, size=(2, 16, 16, 3))  # frames, rows, cols, channels
    p = grid_patch_set(
        stack,
        4,
        stride=4,
        channel_axis=-1,
        normalise="global",
        pixel_size=0.1,
        units="nm",
        edge="reflect",
    )
    assert p.patch_shape == (3, 4, 4) and p.grid_shape == (4, 4) and len(p) == 32
    np.testing.assert_array_equal(p.frames, np.repeat([0, 1], 16))
    np.testing.assert_allclose(p.positions[5], [0.4, 0.4])  # (row 4, col 4) at 0.1 nm/px
    # Recorded normalisation inverts exactly to the raw values of the right frame and channel.
    raw = p.normalisation.invert(p.data)
    np.testing.assert_allclose(raw[17, 2, 2, 2], stack[1, 0, 4, 2], rtol=1e-5)
    np.testing.assert_allclose(p.normalisation.offset.ravel(), stack.mean(axis=(0, 1, 2)))
    pp = grid_patch_set(stack[0, ..., 0], 4, stride=4, normalise="per-patch")
    np.testing.assert_allclose(pp.data.mean(axis=(2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(pp.data.std(axis=(2, 3)), 1, atol=1e-4)


def test_extract_refuses_centres_outside_and_bad_edges():
    with pytest.raises(ValueError, match="outside"):
        extract_patches(np.zeros((8, 8)), [9], [1], 3)
    with pytest.raises(ValueError, match="edge"):
        extract_patches(np.zeros((8, 8)), [4], [4], 3, edge="wrap")

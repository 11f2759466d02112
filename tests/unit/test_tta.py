"""TTA views (pipeline/modeling/tta.py): every view keeps a uint8 batch's shape and dtype, flips are exact
involutions, one-pixel shifts move the content and zero the uncovered edge, the flip+shift views compose."""
from __future__ import annotations

import pytest
import torch

from pipeline.modeling.tta import VIEWS


def _batch() -> torch.Tensor:
    """A uint8 [N, C, H, W] batch with H != W (a swapped axis would show) and no zero pixel (a zeroed edge shows)."""
    torch.manual_seed(0)
    return torch.randint(1, 256, (2, 3, 5, 7), dtype=torch.uint8)


@pytest.mark.parametrize("name", VIEWS.names())
def test_every_view_keeps_the_shape_and_dtype_of_a_uint8_batch(name: str) -> None:
    x = _batch()
    out = VIEWS[name](x)
    assert out.shape == x.shape
    assert out.dtype == torch.uint8


def test_none_is_the_first_view_and_returns_the_image_unchanged() -> None:
    x = _batch()
    assert VIEWS.names()[0] == "none"
    assert torch.equal(VIEWS["none"](x), x)


def test_hflip_mirrors_the_width_and_vflip_the_height_exactly() -> None:
    x = _batch()
    h, w = x.shape[-2:]
    hflipped, vflipped = VIEWS["hflip"](x), VIEWS["vflip"](x)
    for j in range(w):
        assert torch.equal(hflipped[..., j], x[..., w - 1 - j])
    for i in range(h):
        assert torch.equal(vflipped[..., i, :], x[..., h - 1 - i, :])


@pytest.mark.parametrize("name", ["hflip", "vflip"])
def test_flips_are_involutions_and_change_a_non_symmetric_image(name: str) -> None:
    x = _batch()
    assert not torch.equal(VIEWS[name](x), x)
    assert torch.equal(VIEWS[name](VIEWS[name](x)), x)


def test_left1_moves_the_content_one_pixel_left_and_zeroes_the_right_column() -> None:
    x = _batch()
    out = VIEWS["left1"](x)
    assert torch.equal(out[..., :-1], x[..., 1:])
    assert not out[..., -1].any()


def test_right1_moves_the_content_one_pixel_right_and_zeroes_the_left_column() -> None:
    x = _batch()
    out = VIEWS["right1"](x)
    assert torch.equal(out[..., 1:], x[..., :-1])
    assert not out[..., 0].any()


def test_up1_moves_the_content_one_pixel_up_and_zeroes_the_bottom_row() -> None:
    x = _batch()
    out = VIEWS["up1"](x)
    assert torch.equal(out[..., :-1, :], x[..., 1:, :])
    assert not out[..., -1, :].any()


def test_down1_moves_the_content_one_pixel_down_and_zeroes_the_top_row() -> None:
    x = _batch()
    out = VIEWS["down1"](x)
    assert torch.equal(out[..., 1:, :], x[..., :-1, :])
    assert not out[..., 0, :].any()


@pytest.mark.parametrize("name", ["left1", "right1", "up1", "down1"])
def test_a_shift_zeroes_exactly_one_edge_line_and_keeps_every_other_pixel_value(name: str) -> None:
    x = _batch()
    out = VIEWS[name](x)
    h, w = x.shape[-2:]
    line = h if name in ("left1", "right1") else w
    assert int((out == 0).sum()) == x.shape[0] * x.shape[1] * line  # the input has no zero pixel


@pytest.mark.parametrize(("combined", "shift"), [("hflip_left1", "left1"), ("hflip_right1", "right1")])
def test_hflip_then_shift_views_flip_first_and_then_shift(combined: str, shift: str) -> None:
    x = _batch()
    out = VIEWS[combined](x)
    assert torch.equal(out, VIEWS[shift](VIEWS["hflip"](x)))
    opposite = "right1" if shift == "left1" else "left1"  # flipping after the opposite shift is the same picture
    assert torch.equal(out, VIEWS["hflip"](VIEWS[opposite](x)))
    assert not torch.equal(out, VIEWS["hflip"](VIEWS[shift](x)))


def test_hflip_left1_puts_the_mirrored_second_column_first_and_zeroes_the_last() -> None:
    x = _batch()
    w = x.shape[-1]
    out = VIEWS["hflip_left1"](x)
    assert torch.equal(out[..., 0], x[..., w - 2])
    assert not out[..., -1].any()

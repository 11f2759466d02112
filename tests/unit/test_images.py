"""serve/images.py: the one image pipeline (decode -> EXIF orientation -> channels -> resize), its
refusals (decompression bombs before decoding: TooLarge; truncated or non-image bytes:
UnreadableImage naming the file), the folder listing and threaded batch decoding.
All images are small and generated here."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve.errors import TooLarge, UnreadableImage, UserError
from serve.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    RESIZE_MODES,
    ImageSpec,
    convert_array,
    list_images,
    load_image,
    load_images,
)

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def restore_pillow_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_image sets Pillow's process-wide MAX_IMAGE_PIXELS from its spec: put it back after each test
    so that the tiny limits used here do not reach other tests in this process."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def png_bytes(im: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **save)
    return buf.getvalue()


def noise(h: int, w: int, c: int | None = None) -> np.ndarray:
    return RNG.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)


# -- decoding and channels -----------------------------------------------------------------------

def test_an_image_at_the_target_size_is_decoded_exactly(tmp_path: Path) -> None:
    pixels = noise(12, 20)
    Image.fromarray(pixels, "L").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", ImageSpec(12, 20, 1))
    assert out.dtype == np.uint8 and out.shape == (12, 20, 1)
    assert np.array_equal(out[..., 0], pixels)
    rgb = noise(12, 20, 3)
    assert np.array_equal(load_image(png_bytes(Image.fromarray(rgb, "RGB")), ImageSpec(12, 20, 3)), rgb)


def test_exif_orientation_is_applied() -> None:
    pixels = noise(20, 30)  # 20 high, 30 wide as stored
    exif = Image.Exif()
    exif[0x0112] = 6        # "rotate 90 clockwise to display"
    out = load_image(png_bytes(Image.fromarray(pixels, "L"), exif=exif), ImageSpec(30, 20, 1))
    assert np.array_equal(out[..., 0], np.rot90(pixels, -1))


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    values = np.array([[0, 257, 1000], [32768, 65535, 128 * 257]], np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    out = load_image(png_bytes(im), ImageSpec(2, 3, 1))
    assert out[..., 0].tolist() == [[0, 1, 4], [128, 255, 128]]  # round(v / 257)


def test_transparency_is_composited_onto_black() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[0, 255], [255, 0]]        # transparent white-ish pixels become black
    out = load_image(png_bytes(Image.fromarray(rgba, "RGBA")), ImageSpec(2, 2, 3))
    assert out[..., 0].tolist() == [[0, 200], [200, 0]] and (out[..., 0] == out[..., 2]).all()
    la = Image.fromarray(np.dstack([np.full((2, 2), 100, np.uint8), np.array([[0, 255], [128, 255]], np.uint8)]), "LA")
    out = load_image(png_bytes(la), ImageSpec(2, 2, 1))
    assert out[..., 0].tolist()[0] == [0, 100] and 45 <= out[1, 0, 0] <= 55  # half-transparent: half as bright
    palette = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), "P")
    palette.putpalette([255, 255, 255, 90, 90, 90])
    out = load_image(png_bytes(palette, transparency=0), ImageSpec(2, 2, 1))  # index 0 (white) is transparent
    assert out[..., 0].tolist() == [[0, 90], [90, 90]]


def test_rgb_becomes_luma_and_grayscale_is_replicated_to_rgb() -> None:
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    luma = load_image(png_bytes(Image.fromarray(rgb, "RGB")), ImageSpec(1, 3, 1))
    assert luma[0, :, 0].tolist() == [76, 150, 29]  # ITU-R 601: 0.299 R + 0.587 G + 0.114 B
    gray = noise(4, 5)
    out = load_image(png_bytes(Image.fromarray(gray, "L")), ImageSpec(4, 5, 3))
    assert out.shape == (4, 5, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))


def test_convert_array_takes_pixel_rows_through_channels_and_resize() -> None:
    gray = noise(4, 4)[..., None]
    assert convert_array(gray, ImageSpec(4, 4, 1)) is gray  # already at the target: untouched
    out = convert_array(gray, ImageSpec(8, 8, 3))
    assert out.shape == (8, 8, 3) and (out[..., 0] == out[..., 1]).all()


# -- resizing ------------------------------------------------------------------------------------

def bands() -> Image.Image:
    """20 high x 60 wide: three vertical bands 0 | 128 | 255."""
    return Image.fromarray(np.repeat(np.array([[0] * 20 + [128] * 20 + [255] * 20], np.uint8), 20, axis=0), "L")


def test_stretch_ignores_the_aspect_ratio() -> None:
    out = load_image(png_bytes(bands()), ImageSpec(10, 6, 1, resize="stretch"))[..., 0]
    assert out.shape == (10, 6)
    assert (out == out[0]).all()  # every row alike: only the width was squeezed
    row = out[0].astype(int)      # the three bands, dark to bright, blended only at their borders
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all() and 100 <= row[2:4].mean() <= 156


def test_crop_fills_the_target_and_cuts_the_centre() -> None:
    out = load_image(png_bytes(bands()), ImageSpec(20, 20, 1, resize="crop"))[..., 0]
    assert (out == 128).all()


def test_pad_fits_the_whole_image_and_pads_with_black() -> None:
    white = Image.fromarray(np.full((10, 20), 255, np.uint8), "L")  # 10 high x 20 wide into 20 x 20
    out = load_image(png_bytes(white), ImageSpec(20, 20, 1, resize="pad"))[..., 0]
    assert (out[:4] == 0).all() and (out[-4:] == 0).all()   # black above and below
    assert (out[6:14] == 255).all()                          # the whole width kept


def test_a_large_jpeg_is_still_decoded_to_the_target_size() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((400, 300, 3), 120, np.uint8), "RGB").save(buf, "JPEG", quality=95)
    out = load_image(buf.getvalue(), ImageSpec(50, 40, 3))
    assert out.shape == (50, 40, 3) and abs(int(out.mean()) - 120) <= 3


def test_image_spec_refuses_unknown_channels_and_resize_modes() -> None:
    assert RESIZE_MODES == ("stretch", "crop", "pad")
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        ImageSpec(8, 8, 2)
    with pytest.raises(ValueError, match="resize must be one of"):
        ImageSpec(8, 8, 1, resize="zoom")
    spec = ImageSpec(8, 6, 3, resize="pad", max_pixels=1000)
    assert spec.shape == (8, 6, 3) and ImageSpec.from_dict(spec.to_dict()) == spec
    assert ImageSpec.from_dict({"height": 8, "width": 6, "channels": 1, "extra": 1}).max_pixels == MAX_PIXELS


# -- refusals ------------------------------------------------------------------------------------

def test_more_pixels_than_max_pixels_is_too_large(tmp_path: Path) -> None:
    Image.fromarray(noise(12, 12), "L").save(tmp_path / "big.png")
    with pytest.raises(TooLarge) as exc:
        load_image(tmp_path / "big.png", ImageSpec(8, 8, 1, max_pixels=100))
    assert isinstance(exc.value, UserError)
    assert str(exc.value) == (f"{tmp_path / 'big.png'}: image is 12x12 = 144 pixels, above the limit of 100 "
                              "(a decompression bomb?); refusing it")


def test_a_bomb_far_above_the_limit_is_too_large_too(tmp_path: Path) -> None:
    Image.fromarray(noise(30, 30), "L").save(tmp_path / "bomb.png")  # 900 pixels: above Pillow's own 2x check
    with pytest.raises(TooLarge, match=r"bomb\.png: image has 900 pixels, above the limit of 100"):
        load_image(tmp_path / "bomb.png", ImageSpec(8, 8, 1, max_pixels=100))


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    header_only = png_bytes(Image.fromarray(noise(12, 12), "L"))[:60]  # the size is known, the pixels are not there
    with pytest.raises(TooLarge):
        load_image(header_only, ImageSpec(8, 8, 1, max_pixels=100), name="huge.png")
    with pytest.raises(UnreadableImage):  # within the limit, the same bytes fail only when decoded
        load_image(header_only, ImageSpec(8, 8, 1), name="huge.png")


def test_a_truncated_image_is_unreadable_naming_the_file(tmp_path: Path) -> None:
    data = png_bytes(Image.fromarray(noise(40, 40), "L"))
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(UnreadableImage) as exc:
        load_image(tmp_path / "cut.png", ImageSpec(40, 40, 1))
    assert str(exc.value).startswith(f"{tmp_path / 'cut.png'}: not a readable image (")
    assert "\n" not in str(exc.value)


def test_bytes_that_are_no_image_are_unreadable_without_an_object_repr() -> None:
    with pytest.raises(UnreadableImage) as exc:
        load_image(b"id,label\n1,2\n", ImageSpec(8, 8, 1), name="upload.png")
    message = str(exc.value)
    assert message.startswith("upload.png: not a readable image (") and "BytesIO" not in message
    with pytest.raises(UnreadableImage, match=r"^image: not a readable image"):  # bytes without a name
        load_image(b"\x00" * 32, ImageSpec(8, 8, 1))


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.png: file not found"):
        load_image(tmp_path / "nope.png", ImageSpec(8, 8, 1))


# -- folders and batches -------------------------------------------------------------------------

def test_list_images_keeps_image_files_sorted_by_name(tmp_path: Path) -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"} == set(IMAGE_SUFFIXES)
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", "d.tiff", "labels.csv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()  # a folder, whatever its name
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp", "d.tiff"]


def test_load_images_in_threads_equals_one_thread(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        size = (10 + i, 14 + 2 * i)
        mode_image = Image.fromarray(noise(*size, 3), "RGB") if i % 2 else Image.fromarray(noise(*size), "L")
        paths.append(tmp_path / f"{i:02d}.png")
        mode_image.save(paths[-1])
    spec = ImageSpec(16, 16, 3, resize="crop")
    done: list[int] = []
    one = load_images(paths, spec, workers=1)
    many = load_images(paths, spec, workers=4, progress=done.append)
    assert one.shape == (12, 16, 16, 3) and one.dtype == np.uint8
    assert np.array_equal(one, many) and sum(done) == 12
    assert np.array_equal(many[5], load_image(paths[5], spec))  # in file order
    out = np.zeros((12, 16, 16, 3), np.uint8)
    assert load_images(paths, spec, workers=3, out=out) is out and np.array_equal(out, one)


def test_load_images_raises_the_first_bad_file_in_file_order(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(6)]
    for p in paths:
        Image.fromarray(noise(8, 8), "L").save(p)
    paths[2].write_bytes(b"broken")
    paths[4].write_bytes(b"broken too")
    with pytest.raises(UnreadableImage, match=r"^two: not a readable image"):
        load_images(paths, ImageSpec(8, 8, 1), workers=4, names=["zero", "one", "two", "three", "four", "five"])

"""Images of every mode PIL reads come back as RGB uint8 by a documented rule, or are refused
naming the file; EXIF orientation is honoured alike for images, labels and masks; labels stay
exact class ids."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fss_sam2.data.check import check_dataset
from fss_sam2.data.folder import FolderSource, read_mask
from fss_sam2.data.sources import read_image, read_label, to_rgb

H, W = 6, 10
RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
ALPHA = np.tile(np.array([0, 64, 128, 255, 255], np.uint8), (H, 2))  # (H, W)


def on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented rule: channel x alpha / 255, rounded."""
    return ((rgb.astype(np.uint16) * alpha[..., None].astype(np.uint16) + 127) // 255).astype(np.uint8)


def saved(path, im: Image.Image, **kwargs):
    im.save(path, **kwargs)
    before = path.read_bytes()
    return path, before


def read(path, before: bytes) -> np.ndarray:
    """read_image, asserting an RGB uint8 (H,W,3) result and an untouched file."""
    out = read_image(path)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert path.read_bytes() == before
    return out


def test_mode_1(tmp_path):
    bits = GRAY > 127
    out = read(*saved(tmp_path / "a.png", Image.fromarray(bits)))
    assert Image.open(tmp_path / "a.png").mode == "1"
    np.testing.assert_array_equal(out, np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2))


def test_mode_l(tmp_path):
    out = read(*saved(tmp_path / "a.png", Image.fromarray(GRAY)))
    np.testing.assert_array_equal(out, np.repeat(GRAY[..., None], 3, axis=2))


def test_mode_la_is_composited_on_black(tmp_path):
    im = Image.fromarray(np.stack([GRAY, ALPHA], axis=2), mode="LA")
    out = read(*saved(tmp_path / "a.png", im))
    assert Image.open(tmp_path / "a.png").mode == "LA"
    np.testing.assert_array_equal(out, on_black(np.repeat(GRAY[..., None], 3, axis=2), ALPHA))
    assert (out[ALPHA == 0] == 0).all() and (out[ALPHA == 255] == np.repeat(GRAY[..., None], 3, axis=2)[ALPHA == 255]).all()


def palette_image(transparent: int | None = None) -> Image.Image:
    im = Image.fromarray(GRAY % 4, mode="L").convert("P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 200, 200, 200] + [0] * (3 * 252))
    if transparent is not None:
        im.info["transparency"] = transparent
    return im


COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 200]], np.uint8)


def test_mode_p(tmp_path):
    out = read(*saved(tmp_path / "a.png", palette_image()))
    assert Image.open(tmp_path / "a.png").mode == "P"
    np.testing.assert_array_equal(out, COLOURS[GRAY % 4])


def test_mode_p_with_a_transparent_index_is_composited_on_black(tmp_path):
    out = read(*saved(tmp_path / "a.png", palette_image(transparent=3), transparency=3))
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P" and im.info.get("transparency") is not None
    expected = COLOURS[GRAY % 4].copy()
    expected[GRAY % 4 == 3] = 0
    np.testing.assert_array_equal(out, expected)


def test_mode_rgb(tmp_path):
    np.testing.assert_array_equal(read(*saved(tmp_path / "a.png", Image.fromarray(RGB))), RGB)


def test_mode_rgba_is_composited_on_black(tmp_path):
    im = Image.fromarray(np.concatenate([RGB, ALPHA[..., None]], axis=2), mode="RGBA")
    np.testing.assert_array_equal(read(*saved(tmp_path / "a.png", im)), on_black(RGB, ALPHA))


def gradient16() -> np.ndarray:
    values = np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)
    values[0, :3] = [0, 257 * 100, 65535]
    return values


def test_16_bit_png_is_scaled_by_257_not_clipped_to_white(tmp_path):
    values = gradient16()
    out = read(*saved(tmp_path / "a.png", Image.fromarray(values)))
    assert Image.open(tmp_path / "a.png").mode.startswith("I;16")
    assert not (out == 255).all() and len(np.unique(out)) > H * W // 2  # the gradient survives
    assert out[0, :3, 0].tolist() == [0, 100, 255]
    np.testing.assert_array_equal(out[..., 0], np.rint(values / 257).astype(np.uint8))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16_bit_tiff(tmp_path):
    values = gradient16()
    out = read(*saved(tmp_path / "a.tif", Image.fromarray(values)))
    np.testing.assert_array_equal(out[..., 0], np.rint(values / 257).astype(np.uint8))


def test_mode_i_of_a_16_bit_png_follows_the_16_bit_rule(tmp_path):
    """PIL < 10 opens 16-bit grayscale PNGs as mode I: same rule as I;16."""
    Image.fromarray(gradient16()).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        as_i = im.convert("I")
    as_i.format = "PNG"
    np.testing.assert_array_equal(to_rgb(as_i), read_image(tmp_path / "a.png"))


def test_32_bit_integer_image_is_refused_naming_the_file(tmp_path):
    path, _ = saved(tmp_path / "a.tif", Image.fromarray(GRAY.astype(np.int32)))
    assert Image.open(path).mode == "I"
    with pytest.raises(ValueError, match=rf"^{path}: cannot read image \(32-bit integer image \(mode I\)"):
        read_image(path)


def test_float_image_is_refused_naming_the_file(tmp_path):
    path, before = saved(tmp_path / "a.tif", Image.fromarray(GRAY.astype(np.float32) / 255))
    assert Image.open(path).mode == "F"
    with pytest.raises(ValueError, match=rf"^{path}: cannot read image \(32-bit float image \(mode F\)"):
        read_image(path)
    assert path.read_bytes() == before


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # red
    im.paste((0, 0, 0, 128), (0, 0, W // 2, H))  # 50 % black
    path, before = saved(tmp_path / "a.jpg", im, quality=100)
    assert Image.open(path).mode == "CMYK"
    out = read(path, before)
    assert np.abs(out[:, -1].astype(int) - [255, 0, 0]).max() <= 3
    assert np.abs(out[:, 0].astype(int) - [127, 127, 127]).max() <= 3


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'a.png'}: cannot read image"):
        read_image(tmp_path / "a.png")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'a.png'}: cannot read label map"):
        read_label(tmp_path / "a.png")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'a.png'}: cannot read mask"):
        read_mask(tmp_path / "a.png")


# --- EXIF orientation: images, labels and masks alike ------------------------------------------

def exif(orientation: int) -> Image.Exif:
    e = Image.Exif()
    e[0x0112] = orientation
    return e


def upright_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 30x40 photo (a bright square on gray, top-left) and its mask, as they are displayed."""
    photo = np.full((30, 40, 3), 90, np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    photo[2:12, 3:15] = 250
    mask[2:12, 3:15] = 255
    return photo, mask


# orientation -> how the camera stored the displayed picture (the inverse of exif_transpose)
STORED = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, 1),  # displayed = stored rotated 90 degrees clockwise
    8: lambda a: np.rot90(a, -1),
    2: lambda a: a[:, ::-1],
}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_rotated_photo_and_mask_are_read_consistently(tmp_path, orientation):
    photo, mask = upright_pair()
    stored = np.ascontiguousarray(STORED[orientation](photo))
    Image.fromarray(stored).save(tmp_path / "p.jpg", exif=exif(orientation), quality=95)
    # a mask drawn on the displayed photo (no EXIF), and one stored like the photo (with EXIF)
    Image.fromarray(mask).save(tmp_path / "drawn.png")
    Image.fromarray(np.ascontiguousarray(STORED[orientation](mask))).save(tmp_path / "stored.png", exif=exif(orientation))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    image = read_image(tmp_path / "p.jpg")
    assert image.shape == photo.shape
    for name in ("drawn.png", "stored.png"):
        fg = read_mask(tmp_path / name)
        np.testing.assert_array_equal(fg, mask > 0)
        assert image[fg].mean() > 200 and image[~fg].mean() < 120  # the mask covers the square
    np.testing.assert_array_equal(read_label(tmp_path / "stored.png"), mask)  # exact ids, upright
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_exif_rotated_label_keeps_exact_class_ids(tmp_path):
    label = np.zeros((12, 20), np.uint8)
    label[:4, :5], label[6:, 10:], label[5, :] = 3, 17, 255
    pal = Image.fromarray(np.ascontiguousarray(np.rot90(label, 1))).convert("P")
    pal.save(tmp_path / "l.png", exif=exif(6))
    assert Image.open(tmp_path / "l.png").mode == "P"
    out = read_label(tmp_path / "l.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, label)
    Image.fromarray(np.ascontiguousarray(np.rot90(label, 1)).astype(np.uint16)).save(tmp_path / "l16.png", exif=exif(6))
    np.testing.assert_array_equal(read_label(tmp_path / "l16.png"), label)


def test_folder_dataset_with_an_exif_rotated_photo(tmp_path):
    photo, mask = upright_pair()
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for name in ("001", "002"):
            Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1))).save(tmp_path / cls / f"{name}.jpg", exif=exif(6))
            Image.fromarray(mask).save(tmp_path / cls / f"{name}.png")  # drawn on the displayed photo
    source = FolderSource(tmp_path)
    item = source.fold_list("val", 0).items[0]
    image, label = source.load_image(item), source.load_label(item)
    assert image.shape[:2] == label.shape == mask.shape
    assert image[label > 0].mean() > 200
    assert check_dataset("folder", tmp_path, progress=False) == []
    assert check_dataset("folder", tmp_path, fast=True, progress=False) == []  # headers: oriented size


MASKS = {
    "1": lambda m: Image.fromarray(m > 0),
    "L": lambda m: Image.fromarray(m),
    "LA": lambda m: Image.fromarray(np.stack([m, np.full_like(m, 255)], axis=2), mode="LA"),
    "P": lambda m: Image.fromarray((m > 0).astype(np.uint8)).convert("P"),
    "RGB": lambda m: Image.fromarray(np.stack([m * 0, m, m * 0], axis=2)),
    "RGBA": lambda m: Image.fromarray(np.stack([m, m, m, np.full_like(m, 255)], axis=2), mode="RGBA"),
    "I;16": lambda m: Image.fromarray((m > 0).astype(np.uint16) * 65535),
}


@pytest.mark.parametrize("mode", sorted(MASKS))
def test_mask_modes(tmp_path, mode):
    _, mask = upright_pair()
    MASKS[mode](mask).save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == mode
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask > 0)


def test_rgba_mask_with_the_shape_in_alpha(tmp_path):
    """A cut-out: white everywhere, the shape in alpha -> composited on black, the shape."""
    _, mask = upright_pair()
    Image.fromarray(np.stack([np.full_like(mask, 255)] * 3 + [mask], axis=2), mode="RGBA").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask > 0)

import io

import numpy as np
import pytest
from PIL import Image

from ovss_common.images import ImageError, read_image


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgba_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent: compositing on white would change the colour
    path = _save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA"))
    decoded = read_image(path, exif_transpose=True)
    assert decoded.rgb.shape == (4, 5, 3)
    assert (decoded.rgb[..., 0] == 200).all() and (decoded.rgb[..., 1:] == 0).all()
    assert decoded.source_mode == "RGBA"


def test_grayscale_is_replicated(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    decoded = read_image(
        _save(tmp_path / "g.png", Image.fromarray(gray, "L")), exif_transpose=False
    )
    assert all((decoded.rgb[..., c] == gray).all() for c in range(3))


def test_sixteen_bit_is_scaled_with_one_plain_line(tmp_path, capsys, recwarn):
    values = np.array([[0, 65535], [257, 32896]], np.uint16)
    path = _save(tmp_path / "d.png", Image.fromarray(values))
    decoded = read_image(path, exif_transpose=False)
    assert capsys.readouterr().err == f"note: {path}: I;16 image scaled to 8 bits\n"
    assert not recwarn.list
    assert decoded.rgb[..., 0].tolist() == [[0, 255], [1, 128]]
    assert decoded.notes


def test_exif_orientation_applied_only_when_asked(tmp_path):
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = 255
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(tmp_path / "e.jpg", image, exif=exif.tobytes(), quality=100)
    oriented = read_image(path, exif_transpose=True)
    raw = read_image(path, exif_transpose=False)
    assert oriented.rgb.shape[:2] == (3, 2) and oriented.exif_transposed
    assert raw.rgb.shape[:2] == (2, 3) and not raw.exif_transposed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an image"),
        (b"hello, this is text", "not an image"),
    ],
)
def test_unreadable_files_raise_one_line(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path, exif_transpose=True)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_png_is_reported_as_corrupt(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, format="PNG"
    )
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(path, exif_transpose=True)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "nope.jpg", exif_transpose=True)

"""Image conversion: every encoding to RGB uint8 with known pixels, resize, layout errors, inverse."""
from __future__ import annotations

import array

import numpy as np
import pytest

from resfit_ros.config import ConfigError
from resfit_ros.core.images import (ImageConfig, ImageConversionError, image_msg_to_rgb, image_to_rgb,
                                    resize_rgb, rgb_to_image_fields)

# (2, 3, 3) image with distinct known colours
RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[10, 20, 30], [200, 100, 50], [1, 2, 3]]], dtype=np.uint8)
GRAY = np.array([[0, 7, 255], [128, 64, 1]], dtype=np.uint8)


def _encode(enc):
    """(data bytes, channels, expected RGB) for the 8-bit encodings."""
    alpha = np.full(RGB.shape[:2] + (1,), 99, np.uint8)
    if enc == "rgb8":
        return RGB.tobytes(), 3, RGB
    if enc == "bgr8":
        return RGB[:, :, ::-1].tobytes(), 3, RGB
    if enc == "rgba8":
        return np.concatenate([RGB, alpha], 2).tobytes(), 4, RGB
    if enc == "bgra8":
        return np.concatenate([RGB[:, :, ::-1], alpha], 2).tobytes(), 4, RGB
    if enc == "mono8":
        return GRAY.tobytes(), 1, np.repeat(GRAY[:, :, None], 3, axis=2)
    raise AssertionError(enc)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_known_pixels_each_encoding(enc):
    data, c, expected = _encode(enc)
    out = image_to_rgb(2, 3, enc, 3 * c, 0, data)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_row_padding_is_stripped(enc):
    data, c, expected = _encode(enc)
    rows = np.frombuffer(data, np.uint8).reshape(2, 3 * c)
    padded = np.concatenate([rows, np.full((2, 5), 77, np.uint8)], axis=1)  # 5 junk bytes per row
    out = image_to_rgb(2, 3, enc, 3 * c + 5, 0, padded.tobytes())
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("big", [0, 1])
def test_mono16_byte_order(big):
    values = np.array([[0xFFFF, 0xFF00, 0x8000]], dtype=np.uint16)  # byte-swapped: 255, 0, 0
    data = values.astype(">u2" if big else "<u2").tobytes()
    out = image_to_rgb(1, 3, "mono16", 6, big, data)
    np.testing.assert_array_equal(out[0, :, 0], [255, 254, 127])  # x * 255 / 65535, truncated
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_bayer_rggb8_red_scene_is_red():
    raw = np.zeros((8, 8), np.uint8)
    raw[0::2, 0::2] = 200                     # R sites of an RGGB mosaic
    out = image_to_rgb(8, 8, "bayer_rggb8", 8, 0, raw.tobytes())
    centre = out[2:6, 2:6].reshape(-1, 3)
    assert (centre[:, 0] > 150).all() and (centre[:, 1:] < 50).all()


def test_input_buffer_types_give_the_same_result():
    data, _, expected = _encode("bgr8")
    for buf in (data, bytearray(data), memoryview(data), array.array("B", data),
                np.frombuffer(data, np.uint8), list(data)):
        np.testing.assert_array_equal(image_to_rgb(2, 3, "bgr8", 9, 0, buf), expected)


def test_resize_to_configured_size_with_inter_area():
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = 200                         # right half bright
    out = image_to_rgb(48, 64, "rgb8", 64 * 3, 0, img.tobytes(), size=(24, 16))
    assert out.shape == (24, 16, 3)           # (H, W) order, not cv2's (W, H)
    # INTER_AREA on an exact 4x2 downscale averages blocks: the halves stay exact
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 200).all()
    checker = np.indices((4, 4)).sum(0) % 2 * 200
    small = resize_rgb(np.repeat(checker[:, :, None], 3, 2).astype(np.uint8), (2, 2))
    assert (small == 100).all()               # area average, not nearest neighbour


def test_same_size_is_untouched():
    out = image_to_rgb(2, 3, "rgb8", 9, 0, RGB.tobytes(), size=(2, 3))
    np.testing.assert_array_equal(out, RGB)


def test_unknown_encoding_error_names_it():
    with pytest.raises(ImageConversionError, match="'32FC1'"):
        image_to_rgb(2, 3, "32FC1", 24, 0, bytes(48))
    with pytest.raises(ImageConversionError, match="'8UC3'"):
        image_to_rgb(2, 3, "8UC3", 9, 0, bytes(18))


def test_truncated_data_error_names_the_sizes():
    with pytest.raises(ImageConversionError, match=r"17 bytes, expected step\*height = 9\*2 = 18 \(truncated\)"):
        image_to_rgb(2, 3, "rgb8", 9, 0, RGB.tobytes()[:-1])
    with pytest.raises(ImageConversionError, match="19 bytes"):
        image_to_rgb(2, 3, "rgb8", 9, 0, RGB.tobytes() + b"x")


def test_step_smaller_than_row_is_an_error():
    with pytest.raises(ImageConversionError, match=r"step 8 < width\*channels\*bytes = 3\*3\*1 = 9"):
        image_to_rgb(2, 3, "rgb8", 8, 0, bytes(16))
    with pytest.raises(ImageConversionError, match="empty image"):
        image_to_rgb(0, 3, "rgb8", 9, 0, b"")


def test_inverse_round_trip_through_message_fields():
    f = rgb_to_image_fields(RGB)
    assert (f.height, f.width, f.encoding, f.step) == (2, 3, "rgb8", 9)
    assert isinstance(f.data, bytes) and len(f.data) == 18
    np.testing.assert_array_equal(image_msg_to_rgb(f), RGB)  # ImageFields has the msg's attributes
    with pytest.raises(ImageConversionError, match=r"\(2, 3\) float64"):
        rgb_to_image_fields(np.zeros((2, 3)))


def test_image_config_validation():
    assert ImageConfig(height=84, width=96).size == (84, 96)
    with pytest.raises(ConfigError, match="width must be >= 1, got 0"):
        ImageConfig(width=0)

"""sensor_msgs/Image <-> the policy's RGB uint8 arrays. No rclpy; the same code live and offline.

`image_to_rgb(height, width, encoding, step, is_bigendian, data, size)` validates the layout
itself (rosbags-image ignores `step`, so padded rows would be misread), strips row padding, fixes
the byte order of 16-bit data, converts the colours with rosbags-image's `convert_color`
(OpenCV underneath) and resizes with cv2.INTER_AREA to the policy's (H, W).

Supported encodings (SUPPORTED_ENCODINGS): rgb8, bgr8, rgba8, bgra8, mono8, mono16, rgb16, bgr16,
rgba16, bgra16, bayer_{rggb,bggr,gbrg,grbg}{8,16}, yuv422/uyvy, yuv422_yuy2/yuyv. Generic OpenCV
encodings (8UC3, 32FC1 ...) are refused: their channel order / value range is not defined.
16-bit data is scaled to 8 bits (x * 255 / 65535, truncated). Alpha is discarded.

`rgb_to_image_fields(rgb)` is the inverse for the simulated camera: the fields of an rgb8 Image.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
from rosbags.image.image import ImageError, convert_color

from resfit_ros.config import require

# encoding -> (channels, bytes per channel); the layout image_to_rgb checks the data against
SUPPORTED_ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1),
    "mono16": (1, 2), "rgb16": (3, 2), "bgr16": (3, 2), "rgba16": (4, 2), "bgra16": (4, 2),
    "bayer_rggb8": (1, 1), "bayer_bggr8": (1, 1), "bayer_gbrg8": (1, 1), "bayer_grbg8": (1, 1),
    "bayer_rggb16": (1, 2), "bayer_bggr16": (1, 2), "bayer_gbrg16": (1, 2), "bayer_grbg16": (1, 2),
    "yuv422": (2, 1), "uyvy": (2, 1), "yuv422_yuy2": (2, 1), "yuyv": (2, 1),
}


class ImageConversionError(ValueError):
    """An Image cannot be converted: unknown encoding or inconsistent size fields / data length.

    `reason` (for counters): "encoding" (unsupported), "layout" (size fields, step or data length
    inconsistent, or an empty image) or "conversion" (the colour conversion failed).
    """

    def __init__(self, message: str, reason: str = "layout") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ImageConfig:
    """Camera images as the policy sees them."""

    height: int = 84
    """Policy image height in pixels (ResFiT uses 84x84)."""
    width: int = 84
    """Policy image width in pixels."""

    def __post_init__(self) -> None:
        require(self.height >= 1, f"image height must be >= 1, got {self.height}")
        require(self.width >= 1, f"image width must be >= 1, got {self.width}")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)


class ImageFields(NamedTuple):
    """The fields of a sensor_msgs/Image (header excluded)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def _as_bytes_array(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)  # the raw bytes, like a buffer
    try:  # bytes, bytearray, memoryview, array.array('B') (rclpy): zero-copy
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)  # a list of ints


def check_image_layout(height: int, width: int, encoding: str, step: int, data: Any) -> tuple[int, int, np.ndarray]:
    """Validate Image fields without converting: (channels, bytes per channel, the data as bytes).

    Raises ImageConversionError (reason "encoding" or "layout"). Cheap: the synchronizer checks
    every camera message on arrival, so a malformed frame is counted and never queued.
    """
    height, width, step = int(height), int(width), int(step)
    what = f"image {width}x{height} encoding {encoding!r} step {step}"
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"{what}: unsupported encoding {encoding!r}; supported: {', '.join(sorted(SUPPORTED_ENCODINGS))}",
            "encoding")
    channels, depth = SUPPORTED_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"{what}: empty image")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageConversionError(
            f"{what}: step {step} < width*channels*bytes = {width}*{channels}*{depth} = {row_bytes}")
    buf = _as_bytes_array(data)
    if buf.size != step * height:
        raise ImageConversionError(
            f"{what}: data has {buf.size} bytes, expected step*height = {step}*{height} = {step * height}"
            + (" (truncated)" if buf.size < step * height else ""))
    return channels, depth, buf


def image_to_rgb(height: int, width: int, encoding: str, step: int, is_bigendian: int | bool,
                 data: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from Image fields, resized to `size` = (H, W) with INTER_AREA if given."""
    height, width, step = int(height), int(width), int(step)
    what = f"image {width}x{height} encoding {encoding!r} step {step}"
    channels, depth, buf = check_image_layout(height, width, encoding, step, data)
    row_bytes = width * channels * depth
    rows = buf.reshape(height, step)[:, :row_bytes]  # strip row padding
    dtype = np.dtype(np.uint16 if depth == 2 else np.uint8)
    if depth == 2:
        dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    img = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if depth == 2:
        img = img.astype(np.uint16)  # native byte order for OpenCV
    if channels == 1:
        img = img[:, :, 0]
    try:
        rgb = convert_color(img, encoding, "rgb8")
    except (ImageError, cv2.error) as exc:
        raise ImageConversionError(f"{what}: colour conversion failed: {exc}", "conversion") from None
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # pragma: no cover - defensive, convert_color contract
        raise ImageConversionError(f"{what}: conversion gave shape {rgb.shape}, expected (H, W, 3)")
    return resize_rgb(rgb, size) if size is not None else rgb


def image_msg_to_rgb(msg: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """image_to_rgb over any object with Image's fields (rclpy or rosbags message)."""
    return image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data, size)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 resized to size = (H, W) with cv2.INTER_AREA; unchanged if already that size."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"target size must be positive, got {size}")
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)  # cv2 takes (width, height)


def rgb_to_image_fields(rgb: np.ndarray) -> ImageFields:
    """Fields of an rgb8 sensor_msgs/Image holding `rgb` ((H, W, 3) uint8); no row padding."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageConversionError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    return ImageFields(height=h, width=w, encoding="rgb8",
                       is_bigendian=int(sys.byteorder == "big"), step=w * 3,
                       data=np.ascontiguousarray(rgb).tobytes())

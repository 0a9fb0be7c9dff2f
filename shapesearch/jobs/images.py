"""Reading and writing images as float arrays scaled to [0, 1]."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ShapesearchError

DEFAULT_IMAGE = "astronaut.png"  # NASA photograph (public domain), as bundled in scikit-image

# Pillow mode -> (mode to convert to, bit depth)
_MODES = {
    "1": ("L", 8), "L": ("L", 8), "LA": ("LA", 8), "RGB": ("RGB", 8), "RGBA": ("RGBA", 8),
    "CMYK": ("RGB", 8), "YCbCr": ("RGB", 8), "LAB": ("RGB", 8), "HSV": ("RGB", 8),
    "I;16": ("I;16", 16), "I;16L": ("I;16", 16), "I;16B": ("I;16", 16), "I;16N": ("I;16", 16),
    "I": ("I", 16),
}


@dataclass
class ImageData:
    """Pixels in [0, 1] as H×W (gray) or H×W×C, and the bit depth they came with."""

    pixels: np.ndarray
    bits: int
    name: str


def default_image_path() -> Path:
    """The bundled astronaut photograph."""
    return Path(str(resources.files("shapesearch") / "data" / DEFAULT_IMAGE))


def load_image(path: str | Path | None) -> ImageData:
    """Load PNG/JPEG/... (gray, RGB, alpha, palette, 16-bit gray); clear errors otherwise."""
    path = default_image_path() if path is None else Path(path)
    if not path.is_file():
        raise ShapesearchError(f"image {path} not found; give an existing PNG/JPEG file")
    try:
        with warnings.catch_warnings():
            # Pillow's guard against decompression bombs (about 89 M pixels) stops us, not a warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ShapesearchError(f"{path} is larger than this tool reads as an image ({exc}); "
                               "crop or resize it, or save it as a .npy array") from exc
    except UnidentifiedImageError as exc:
        raise ShapesearchError(f"{path} is not an image Pillow can read; give a PNG or JPEG file") from exc
    except OSError as exc:
        raise ShapesearchError(f"{path} could not be opened ({exc})") from exc
    try:
        with im:
            if getattr(im, "n_frames", 1) > 1:
                raise ShapesearchError(f"{path} has {im.n_frames} frames; save one frame as its own image")
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode not in _MODES:
                raise ShapesearchError(f"{path}: image mode {mode!r} is not supported; convert it to 8-bit "
                                       "RGB/RGBA/gray or 16-bit gray, or save it as a .npy array and "
                                       "compress that")
            target, bits = _MODES[mode]
            if target != mode and target not in ("I;16", "I"):
                im = im.convert(target)
            arr = np.array(im)
    except OSError as exc:
        raise ShapesearchError(f"{path} could not be decoded ({exc}); is the file truncated?") from exc
    if bits == 16 and arr.max(initial=0) > 65535:
        raise ShapesearchError(f"{path}: pixel values exceed 16 bits; save it as a .npy array and compress that")
    pixels = arr.astype(np.float64) / (2**bits - 1)
    if pixels.size < 4:
        raise ShapesearchError(f"{path} has only {pixels.size} values; nothing to compress")
    return ImageData(pixels, bits, path.stem)


def save_image(pixels: np.ndarray, bits: int, path: str | Path) -> None:
    """Write [0, 1] pixels (H×W or H×W×C, C ≤ 4) as an 8- or 16-bit image, clipped and rounded."""
    peak = 2**bits - 1
    values = np.rint(np.clip(pixels, 0.0, 1.0) * peak)
    if bits == 16:
        if pixels.ndim != 2:
            raise ShapesearchError("16-bit output is only supported for gray images")
        img = Image.fromarray(values.astype(np.uint16))
    else:
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        if channels > 4:
            raise ShapesearchError(f"cannot write an image with {channels} channels; write .npy instead")
        data = values.astype(np.uint8)
        img = Image.fromarray(data[..., 0] if channels == 1 and data.ndim == 3 else data)
    img.save(path)


def psnr(reference: np.ndarray, approx: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for data scaled to [0, peak]."""
    mse = float(np.mean((reference - approx) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)

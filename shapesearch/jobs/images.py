"""Reading and writing images as float arrays scaled to [0, 1]."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ShapesearchError
from .memory import check_readable

_ORIENTATION = 0x0112  # the EXIF tag
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
    """Load PNG/JPEG/... (gray, RGB, alpha, palette, 16-bit gray) as H×W or H×W×C, and an
    animation (GIF, APNG, multi-page TIFF) as frames × H × W × C; clear errors otherwise."""
    path = default_image_path() if path is None else Path(path)
    if path.is_dir():
        raise ShapesearchError(f"image {path} is a directory; give an image file (PNG, JPEG, ...)")
    if not path.is_file():
        raise ShapesearchError(f"image {path} not found; give an existing PNG/JPEG file")
    if path.suffix.lower() in (".npy", ".safetensors"):
        raise ShapesearchError(f"{path} is an array, not an image; search it with `shapesearch tensor {path}`")
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
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                arr, bits = _read_frames(im, path, frames)
            else:
                arr, bits = _read_frame(im, path)
    except OSError as exc:
        raise ShapesearchError(f"{path} could not be decoded ({exc}); is the file truncated?") from exc
    if bits == 16 and arr.max(initial=0) > 65535:
        raise ShapesearchError(f"{path}: pixel values exceed 16 bits; save it as a .npy array and compress that")
    pixels = arr.astype(np.float64)
    pixels /= 2**bits - 1  # in place: a second float64 copy would double the peak for a large image
    if pixels.size < 4:
        raise ShapesearchError(f"{path} has only {pixels.size} values; nothing to compress")
    return ImageData(pixels, bits, path.stem)


def check_image_header(stream: object, name: str) -> None:
    """What :func:`load_image` would refuse from the header alone (not an image, a mode it does
    not read, 16-bit colour): for an upload, at submission."""
    try:
        with Image.open(stream) as im:
            _check_mode(im, Path(name))
    except UnidentifiedImageError as exc:
        raise ShapesearchError(f"{name} is not an image Pillow can read; give a PNG or JPEG file") from exc
    except (OSError, Image.DecompressionBombError) as exc:
        raise ShapesearchError(f"{name} could not be opened ({exc})") from exc


def _check_mode(im: Image.Image, path: Path) -> str:
    """The :data:`_MODES` key of ``im``'s mode (a palette maps to RGB or RGBA), refusing a mode
    this reader does not convert exactly (16-bit colour is decoded by Pillow to 8 bits)."""
    own = im.mode
    rawmodes = [t.args[0] if isinstance(t.args, tuple) else t.args for t in (im.tile or [])]
    if _MODES.get(own, ("", 8))[1] != 16 and any(";16" in str(r) for r in rawmodes):
        # Pillow decodes 16-bit colour (and 16-bit gray + alpha) to 8 bits: the data would change
        raise ShapesearchError(f"{path}: 16-bit colour ({rawmodes[0]}) is read by Pillow only as 8 bits; "
                               "save it as a .npy array (H × W × C) and use `shapesearch tensor`, or "
                               "convert it to 8-bit colour or 16-bit gray")
    if own == "P":
        own = "RGBA" if "transparency" in im.info else "RGB"
    if own not in _MODES:
        raise ShapesearchError(f"{path}: image mode {im.mode!r} is not supported; convert it to 8-bit "
                               "RGB/RGBA/gray or 16-bit gray, or save it as a .npy array and "
                               "compress that")
    return own


def _read_frame(im: Image.Image, path: Path, mode: str | None = None) -> tuple[np.ndarray, int]:
    """The current frame as an array in ``mode`` (default: the one its own mode maps to) and
    its bit depth."""
    own = _check_mode(im, path)
    if im.getexif().get(_ORIENTATION, 1) != 1:  # a camera's rotation: search what the viewer shows
        im = ImageOps.exif_transpose(im)
    target, bits = _MODES[mode or own]
    if target != im.mode and target not in ("I;16", "I"):
        im = im.convert(target)
    return np.array(im), bits


def _read_frames(im: Image.Image, path: Path, count: int) -> tuple[np.ndarray, int]:
    """Every frame of an animation (GIF, APNG, multi-page TIFF) as frames × H × W × C, each
    converted to the first frame's mode (a later frame may carry its own palette)."""
    arr0, bits = _read_frame(im, path)
    if bits != 8:
        raise ShapesearchError(f"{path}: animations are read with 8-bit frames, this one has {bits}-bit "
                               "frames; save the frames as a .npy array (frames × H × W × C)")
    mode = "L" if arr0.ndim == 2 else {3: "RGB", 4: "RGBA"}[arr0.shape[2]]
    check_readable(count * arr0.size * 9, f"{path}: {count} frames of {arr0.size:,} values",  # uint8, then float64
                   "use fewer or smaller frames")
    out = np.empty((count, *arr0.shape), np.uint8)
    for i in range(count):
        im.seek(i)
        if im.size[::-1] != arr0.shape[:2]:
            raise ShapesearchError(f"{path}: frame {i} is {im.size[0]}×{im.size[1]}, frame 0 "
                                   f"{arr0.shape[1]}×{arr0.shape[0]}; give frames of one size")
        frame, _ = _read_frame(im, path, mode)
        out[i] = frame
    return (out[..., None] if out.ndim == 3 else out), bits


def save_image(pixels: np.ndarray, bits: int, path: str | Path) -> None:
    """Write [0, 1] pixels (H×W or H×W×C, C ≤ 4) as an 8- or 16-bit image, clipped and rounded;
    frames × H × W × C as an animated PNG (lossless)."""
    peak = 2**bits - 1
    values = np.rint(np.clip(pixels, 0.0, 1.0) * peak)
    if pixels.ndim == 4:
        if bits != 8 or pixels.shape[3] > 4 or Path(path).suffix.lower() != ".png":
            raise ShapesearchError("frames are written as an 8-bit animated .png (≤ 4 channels); "
                                   "write .npy instead")
        data = values.astype(np.uint8)
        frames = [Image.fromarray(f[..., 0] if f.shape[2] == 1 else f) for f in data]
        frames[0].save(path, format="PNG", save_all=True, append_images=frames[1:])
        return
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
    """Peak signal-to-noise ratio in dB for data scaled to [0, peak] (``peak`` > 0)."""
    diff = np.subtract(reference, approx, dtype=np.float64).ravel()  # one temporary, not three
    diff /= peak  # in units of the peak: peak² and the squares would overflow for data near 1e160
    mse = float(diff @ diff) / max(diff.size, 1)
    return math.inf if mse == 0 else -10 * math.log10(mse)

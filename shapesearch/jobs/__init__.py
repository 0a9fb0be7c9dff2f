"""Search jobs with files on disk: read an image or array, search, write ``result.json``,
``tt.safetensors``, a reconstruction and a plot; read them back."""

from .arrays import load_array
from .artifacts import load_tt, reconstruct
from .images import load_image, save_image
from .search_job import Job, run_job

__all__ = ["Job", "load_array", "load_image", "load_tt", "reconstruct", "run_job", "save_image"]

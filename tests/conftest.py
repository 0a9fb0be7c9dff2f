import os

# Ray listens on loopback only and writes no auth token (set before ray is imported anywhere)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def smooth_image(h: int = 48, w: int = 64, c: int = 3, seed: int = 0) -> np.ndarray:
    """A small natural-looking image in [0, 1]: a few smooth blobs plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, c))
    for _ in range(6):
        cy, cx, s = rng.uniform(0, 1, 3)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.1 * s))
        img += blob[..., None] * rng.uniform(0.2, 1.0, c)
    img += 0.02 * rng.standard_normal(img.shape)
    img -= img.min()
    return img / img.max()


@pytest.fixture
def image() -> np.ndarray:
    return smooth_image()


def pytest_terminal_summary(terminalreporter) -> None:
    """How many generated cases the CLI fuzz test ran (the issue asks CI to print it)."""
    import sys

    fuzz = sys.modules.get("tests.test_cli_fuzz")
    if fuzz is not None and fuzz.CASES_RUN:
        counts = ", ".join(f"{c} {n}" for c, n in fuzz.CASES_RUN.items())
        terminalreporter.write_line(f"CLI fuzz: {sum(fuzz.CASES_RUN.values())} generated cases ({counts}), "
                                    "each checked against the exit-0-or-one-error-line contract")

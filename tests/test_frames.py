"""Animations (GIF, APNG) are read as frames × H × W × C, searched, and written back as APNG."""

import json

import numpy as np
from PIL import Image

from shapesearch.jobs.images import load_image, save_image

from .conftest import smooth_image
from .test_cli import FAST, _error, _run


def _frames(n=5, h=20, w=28):
    """A short pan across a smooth image: n frames of h × w × 3, 8-bit."""
    big = smooth_image(h, w + 2 * n, 3)
    return [(big[:, 2 * i:2 * i + w] * 255).round().astype(np.uint8) for i in range(n)]


def test_animated_gif_reads_every_frame_in_one_mode(tmp_path):
    frames = _frames()
    # each frame gets its own adaptive palette: they must still all come back as RGB
    ims = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=64) for f in frames]
    ims[0].save(tmp_path / "a.gif", save_all=True, append_images=ims[1:], duration=50)
    data = load_image(tmp_path / "a.gif")
    assert data.pixels.shape == (5, 20, 28, 3) and data.bits == 8
    for got, im in zip(data.pixels, ims):
        assert np.array_equal(np.rint(got * 255).astype(np.uint8), np.array(im.convert("RGB")))


def test_gray_animation_has_a_channel_axis_and_round_trips_as_apng(tmp_path):
    frames = [f[..., 0] for f in _frames(3)]
    Image.fromarray(frames[0]).save(tmp_path / "g.png", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    data = load_image(tmp_path / "g.png")
    assert data.pixels.shape == (3, 20, 28, 1)
    save_image(data.pixels, 8, tmp_path / "back.png")
    assert np.array_equal(load_image(tmp_path / "back.png").pixels, data.pixels)


def test_search_of_an_animation_meets_eps_and_writes_an_animation(tmp_path, capsys):
    ims = [Image.fromarray(f) for f in _frames()]
    ims[0].save(tmp_path / "a.png", save_all=True, append_images=ims[1:])
    code, stdout, _ = _run(["image", tmp_path / "a.png", "--eps", "0.1", "--out", tmp_path / "run", "--json",
                            *FAST], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["input_shape"] == [5, 20, 28, 3] and result["rel_error"] <= 0.1
    source = load_image(tmp_path / "a.png").pixels
    rebuilt = load_image(tmp_path / "run" / "reconstruction.png").pixels
    assert rebuilt.shape == source.shape
    # 8-bit rounding of the written frames adds at most half a level per pixel
    err = np.linalg.norm(rebuilt - source) / np.linalg.norm(source)
    assert err <= 0.1 + 0.5 / 255 * np.sqrt(source.size) / np.linalg.norm(source)
    code, stdout, _ = _run(["reconstruct", tmp_path / "run", "--out", tmp_path / "r.png"], capsys)
    assert code == 0 and load_image(tmp_path / "r.png").pixels.shape == source.shape


def test_frames_written_anywhere_but_png_are_refused(tmp_path, capsys):
    ims = [Image.fromarray(f) for f in _frames(2)]
    ims[0].save(tmp_path / "a.png", save_all=True, append_images=ims[1:])
    assert _run(["image", tmp_path / "a.png", "--out", tmp_path / "run", *FAST], capsys)[0] == 0
    # a 16-bit output or a GIF cannot hold the frames losslessly: one line, nothing written
    msg = _error(["reconstruct", tmp_path / "run", "--out", tmp_path / "r.gif"], capsys)
    assert "unsupported" in msg or ".npy" in msg
    assert not (tmp_path / "r.gif").exists()

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from shapesearch.cli import main
from shapesearch.jobs.images import load_image

from .conftest import smooth_image

FAST = ["--workers", "0", "--population", "8", "--generations", "3"]
KEYS = {"shape", "ranks", "params", "cr", "rel_error", "psnr", "evaluations", "cache_hits",
        "wall_seconds", "history"}


def _png(tmp_path, name="img.png", mode="RGB", bits=8):
    img = smooth_image(40, 56, 4)
    if mode == "L":
        arr = (img[..., 0] * 255).round().astype(np.uint8)
    elif mode == "I;16":
        arr = (img[..., 0] * 65535).round().astype(np.uint16)
    elif mode == "RGBA":
        arr = (img * 255).round().astype(np.uint8)
    else:
        arr = (img[..., :3] * 255).round().astype(np.uint8)
    path = tmp_path / name
    im = Image.fromarray(arr)
    if mode == "P":
        im = im.convert("P")
    im.save(path)
    return path


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_image_run_writes_everything_and_reconstructs(tmp_path, capsys):
    src = _png(tmp_path)
    out = tmp_path / "run"
    code, stdout, _ = _run(["image", src, "--eps", "0.1", "--out", out, "--json", *FAST], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert KEYS <= set(result)
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["params"] == result["params"] and on_disk["rel_error"] <= 0.1
    assert result["shape"]["composition"] and result["shape"]["axes"][0]["padded"] >= 40
    for f in ("tt.safetensors", "reconstruction.png", "convergence.png", "checkpoint.json"):
        assert (out / f).is_file()
    # rebuild from tt.safetensors alone and compare with the run's own reconstruction
    rebuilt = tmp_path / "rebuilt.png"
    code, stdout, _ = _run(["reconstruct", out / "tt.safetensors", "--out", rebuilt, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["shape"] == [40, 56, 3]
    a = np.asarray(Image.open(rebuilt))
    b = np.asarray(Image.open(out / "reconstruction.png"))
    np.testing.assert_array_equal(a, b)
    orig = load_image(src).pixels
    err = np.linalg.norm(a / 255 - orig) / np.linalg.norm(orig)
    assert err <= 0.1 + 0.01  # 8-bit rounding of the reconstruction adds a little


@pytest.mark.parametrize("mode,channels", [("L", None), ("I;16", None), ("RGBA", 4), ("P", 3)])
def test_gray_16bit_alpha_palette_images_work(tmp_path, capsys, mode, channels):
    src = _png(tmp_path, mode=mode)
    code, stdout, _ = _run(["image", src, "--out", tmp_path / "r", "--json", *FAST], capsys)
    assert code == 0
    shape = json.loads(stdout)["input_shape"]
    assert shape == ([40, 56] if channels is None else [40, 56, channels])
    back = Image.open(tmp_path / "r" / "reconstruction.png")
    assert back.mode == {"L": "L", "I;16": "I;16", "RGBA": "RGBA", "P": "RGB"}[mode]


def test_jpeg_works(tmp_path, capsys):
    path = tmp_path / "x.jpg"
    Image.fromarray((smooth_image(40, 56, 3) * 255).astype(np.uint8)).save(path)
    code, stdout, _ = _run(["image", path, "--out", tmp_path / "r", "--json", *FAST], capsys)
    assert code == 0 and json.loads(stdout)["rel_error"] <= 0.1


def test_tensor_npy_and_safetensors(tmp_path, capsys):
    x = smooth_image(30, 35, 2).astype(np.float32) * 7.0
    np.save(tmp_path / "x.npy", x)
    code, stdout, _ = _run(["tensor", tmp_path / "x.npy", "--eps", "0.05", "--out", tmp_path / "a",
                            "--json", *FAST], capsys)
    assert code == 0
    r = json.loads(stdout)
    assert r["rel_error"] <= 0.05 and r["input_shape"] == [30, 35, 2]
    code, _, _ = _run(["reconstruct", tmp_path / "a", "--out", tmp_path / "back.npy"], capsys)
    back = np.load(tmp_path / "back.npy", allow_pickle=False)
    assert code == 0 and np.linalg.norm(back - x) / np.linalg.norm(x) <= 0.05
    save_file({"w": x, "b": x[0]}, str(tmp_path / "m.safetensors"))
    code, _, _ = _run(["tensor", tmp_path / "m.safetensors", "--key", "w", "--out", tmp_path / "b",
                       *FAST], capsys)
    assert code == 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_safetensors_of_types_numpy_lacks_are_widened_exactly(tmp_path, capsys, dtype):
    import torch  # the test extra installs it; the engine itself never imports torch
    from safetensors.torch import save_file as save_torch

    from shapesearch.jobs.arrays import load_array

    codes = torch.arange(256, dtype=torch.uint8).view(getattr(torch, dtype))  # every bit pattern, NaNs included
    weight = torch.from_numpy(smooth_image(24, 20, 2)).to(getattr(torch, dtype))
    save_torch({"codes": codes, "weight": weight, "other": torch.ones(3)}, str(tmp_path / "m.safetensors"))
    assert np.array_equal(load_array(tmp_path / "m.safetensors", "codes"), codes.float().numpy(), equal_nan=True)
    code, stdout, _ = _run(["tensor", tmp_path / "m.safetensors", "--key", "weight", "--out", tmp_path / "w",
                            "--json", *FAST], capsys)
    assert code == 0 and json.loads(stdout)["input_shape"] == [24, 20, 2]
    code, _, _ = _run(["reconstruct", tmp_path / "w", "--out", tmp_path / "back.npy"], capsys)
    back, original = np.load(tmp_path / "back.npy"), weight.double().numpy()
    assert code == 0 and np.linalg.norm(back - original) <= 0.1 * np.linalg.norm(original) * (1 + 1e-9)


def test_psnr_does_not_depend_on_the_data_scale(tmp_path, capsys):
    x = smooth_image(24, 20, 2)
    results = []
    for scale in (1.0, 2.0**1000):  # squares of 2^1000 overflow; the search and the PSNR must not (a power of
        # two: the scaled search sees bit for bit the same data, so the CRs are equal on any CPU)
        np.save(tmp_path / "x.npy", x * scale)
        code, stdout, _ = _run(["tensor", tmp_path / "x.npy", "--out", tmp_path / f"{scale:g}", "--json", *FAST],
                               capsys)
        assert code == 0
        results.append(json.loads(stdout))
    assert results[0]["cr"] == results[1]["cr"] and results[1]["rel_error"] <= 0.1
    assert results[1]["psnr"] == pytest.approx(results[0]["psnr"], abs=1e-6)
    # 2^1000 · a core overflows float32: those cores stay float64
    assert [r["core_dtype"] for r in results] == ["float32", "float64"]


def test_cores_are_stored_in_float32_and_the_error_reported_is_theirs(tmp_path, capsys):
    from shapesearch.jobs.artifacts import load_tt

    x = smooth_image(30, 36, 3)
    np.save(tmp_path / "x.npy", x)
    code, stdout, _ = _run(["tensor", tmp_path / "x.npy", "--eps", "0.05", "--out", tmp_path / "run", "--json",
                            *FAST], capsys)
    result = json.loads(stdout)
    cores = load_tt(tmp_path / "run")[0]
    assert code == 0 and result["core_dtype"] == "float32" and all(c.dtype == np.float32 for c in cores)
    assert (tmp_path / "run" / "tt.safetensors").stat().st_size < 4 * result["params"] + 2048  # + the header
    assert _run(["reconstruct", tmp_path / "run", "--out", tmp_path / "back.npy"], capsys)[0] == 0
    back = np.load(tmp_path / "back.npy")
    measured = np.linalg.norm(back - x) / np.linalg.norm(x)
    assert back.dtype == np.float64 and measured == pytest.approx(result["rel_error"], rel=1e-9)
    assert measured <= 0.05


def _error(args, capsys):
    code, out, err = _run(args, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("shapesearch: error:"), err
    return lines[0]


def test_bad_image_inputs(tmp_path, capsys):
    assert "not found" in _error(["image", tmp_path / "none.png"], capsys)
    (tmp_path / "t.png").write_text("hello")
    assert "not an image" in _error(["image", tmp_path / "t.png"], capsys)
    good = _png(tmp_path)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:300])
    assert "decoded" in _error(["image", tmp_path / "cut.png", *FAST], capsys)
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "f.tiff")
    assert "not supported" in _error(["image", tmp_path / "f.tiff"], capsys)
    Image.new("L", (1, 1)).save(tmp_path / "dot.png")
    assert "nothing to compress" in _error(["image", tmp_path / "dot.png"], capsys)
    Image.new("L", (8, 8)).save(tmp_path / "black.png")
    assert "all zeros" in _error(["image", tmp_path / "black.png", *FAST], capsys)
    assert "is a directory" in _error(["image", tmp_path], capsys)
    np.save(tmp_path / "a.npy", np.ones((8, 8)))
    assert "shapesearch tensor" in _error(["image", tmp_path / "a.npy"], capsys)
    assert "is empty" in _error(["image", good, "--out", ""], capsys)


def _png16(path, pixels, color_type):
    """A 16-bit PNG written by hand (Pillow writes 16 bits for gray only)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels,color_type", [(3, 2), (4, 6), (2, 4)])
def test_16_bit_colour_is_refused_not_cut_to_8_bits(tmp_path, capsys, channels, color_type):
    pixels = (smooth_image(16, 16, channels) * 65535).astype(np.uint16)
    _png16(tmp_path / "deep.png", pixels, color_type)
    assert "16-bit colour" in _error(["image", tmp_path / "deep.png", *FAST, "--out", tmp_path / "r"], capsys)
    assert not (tmp_path / "r").exists()


def test_exif_orientation_is_applied(tmp_path):
    pixels = (smooth_image(24, 40, 3) * 255).astype(np.uint8)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # the camera was turned: shown rotated 90° clockwise
    im.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "turned.jpg").pixels.shape == (40, 24, 3)


@pytest.mark.parametrize("args,msg", [(["--eps", "0"], "eps"), (["--eps", "1.5"], "eps"),
                                      (["--eps", "abc"], "invalid float"),
                                      (["--population", "1"], "population"),
                                      (["--population", "100000"], "population"),
                                      (["--stall", "-1"], "stall"),
                                      (["--workers", "-1"], "workers"),
                                      (["--time-limit", "-3"], "time-limit"),
                                      (["--time-limit", "nan"], "time-limit"),
                                      (["--time-limit", "inf"], "time-limit"),
                                      (["--pareto", "0.5:0.99999:2"], "--pareto"),
                                      (["--pareto", "0.10001:0.10002:5"], "distinct")])
def test_bad_search_options(tmp_path, capsys, args, msg):
    src = _png(tmp_path)
    assert msg in _error(["image", src, "--out", tmp_path / "r", *args], capsys)
    assert not (tmp_path / "r").exists()


def test_nothing_is_written_over(tmp_path, capsys):
    src = _png(tmp_path)
    out = tmp_path / "r"
    assert _run(["image", src, "--out", out, *FAST], capsys)[0] == 0
    before = (out / "result.json").read_bytes()
    assert "already holds a run" in _error(["image", src, "--out", out, *FAST], capsys)
    assert (out / "result.json").read_bytes() == before
    (tmp_path / "file").write_text("x")
    assert "is a file" in _error(["image", src, "--out", tmp_path / "file", *FAST], capsys)
    assert "not found" in _error(["image", src, "--resume", tmp_path / "none", *FAST], capsys)
    assert "drop --out" in _error(["image", src, "--resume", out, "--out", tmp_path / "x"], capsys)
    rebuilt = tmp_path / "keep.png"
    rebuilt.write_bytes(b"mine")
    assert "exists" in _error(["reconstruct", out, "--out", rebuilt], capsys)
    assert rebuilt.read_bytes() == b"mine"


def test_resume_from_the_cli_finishes_the_run(tmp_path, capsys):
    src = _png(tmp_path)
    common = ["--workers", "0", "--population", "8", "--seed", "2"]
    _run(["image", src, "--out", tmp_path / "full", "--generations", "4", *common], capsys)
    _run(["image", src, "--out", tmp_path / "part", "--generations", "2", *common], capsys)
    code, _, _ = _run(["image", src, "--resume", tmp_path / "part", "--generations", "4", *common], capsys)
    assert code == 0
    a = json.loads((tmp_path / "full" / "result.json").read_text())
    b = json.loads((tmp_path / "part" / "result.json").read_text())
    for k in ("shape", "ranks", "params", "evaluations", "cache_hits"):
        assert a[k] == b[k]


def test_bad_tensor_inputs(tmp_path, capsys):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert "pickles are never loaded" in _error(["tensor", tmp_path / "obj.npy"], capsys)
    np.save(tmp_path / "c.npy", np.ones((4, 4), complex))
    assert "not a real number type" in _error(["tensor", tmp_path / "c.npy"], capsys)
    x = np.ones((6, 6))
    x[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert "NaN" in _error(["tensor", tmp_path / "nan.npy"], capsys)
    np.save(tmp_path / "z.npy", np.zeros((6, 6)))
    assert "all zeros" in _error(["tensor", tmp_path / "z.npy"], capsys)
    (tmp_path / "x.txt").write_text("1 2 3")
    assert "unsupported file type" in _error(["tensor", tmp_path / "x.txt"], capsys)
    two = {"a": np.ones((4, 4), np.float32), "b": np.ones(3, np.float32)}
    save_file(two, str(tmp_path / "m.safetensors"))
    assert "--key" in _error(["tensor", tmp_path / "m.safetensors"], capsys)
    assert "no tensor" in _error(["tensor", tmp_path / "m.safetensors", "--key", "zz"], capsys)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    assert "safetensors" in _error(["tensor", tmp_path / "bad.safetensors"], capsys)


def test_bad_reconstruct_inputs(tmp_path, capsys):
    assert "not found" in _error(["reconstruct", tmp_path / "none", "--out", tmp_path / "o.png"], capsys)
    save_file({"core_0": np.ones((1, 2, 1))}, str(tmp_path / "tt.safetensors"))
    assert "not written by shapesearch" in _error(["reconstruct", tmp_path, "--out", tmp_path / "o.npy"],
                                                   capsys)
    np.save(tmp_path / "x.npy", smooth_image(20, 20, 1)[..., 0])
    _run(["tensor", tmp_path / "x.npy", "--out", tmp_path / "r", *FAST], capsys)
    assert "holds an array" in _error(["reconstruct", tmp_path / "r", "--out", tmp_path / "o.png"], capsys)
    assert "unsupported type" in _error(["reconstruct", tmp_path / "r", "--out", tmp_path / "o.bmp"], capsys)


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "shapesearch.cli", "image", str(tmp_path / "no.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("shapesearch: error:") and "not found" in proc.stderr


@pytest.mark.parametrize("damage", [
    lambda t: t.update(axes=[]),
    lambda t: t["axes"][0].update(size=0),
    lambda t: t["axes"][0].update(size=-20),
    lambda t: t["axes"][0].update(size=20.5),
    lambda t: t["axes"][0].update(padded=999),
    lambda t: t.update(sweep="sideways"),
    lambda t: t.update(mode_sizes=[1, 2]),
    lambda t: t["modes"][0].append(1),
])
def test_a_tampered_tensorization_is_one_line(tmp_path, capsys, damage):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    np.save(tmp_path / "x.npy", smooth_image(20, 20, 1)[..., 0])
    _run(["tensor", tmp_path / "x.npy", "--out", tmp_path / "r", *FAST], capsys)
    path = tmp_path / "r" / "tt.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata()
    tensorization = json.loads(header["tensorization"])
    damage(tensorization)
    save_file(load_file(str(path)), str(path), metadata={**header, "tensorization": json.dumps(tensorization)})
    assert "damaged header" in _error(["reconstruct", tmp_path / "r", "--out", tmp_path / "o.npy"], capsys)
    assert not (tmp_path / "o.npy").exists()

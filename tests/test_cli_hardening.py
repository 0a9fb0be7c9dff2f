"""Regression tests for the search commands' hardening pass: each failed before it (a traceback,
a hang, a wrong input, or a silently mixed run)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from shapesearch.cli.main import build_parser

from .test_cli import FAST, _error, _png, _run, main

CHILD_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
             "MPLBACKEND": "Agg"}


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory nobody may create files in: chmod works for a normal user; root ignores
    permission bits, so it gets a directory under /sys, where nothing can be created."""
    if os.geteuid() == 0:
        return Path("/sys/shapesearch-test")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "out"


def test_resume_without_a_path_reads_the_runs_own_input_from_any_directory(tmp_path, capsys, monkeypatch):
    src = _png(tmp_path, "photo.png")
    out = tmp_path / "runs" / "photo"
    assert _run(["image", src, "--out", out, "--population", "6", "--generations", "1", "--workers", "0"],
                capsys)[0] == 0
    monkeypatch.chdir(tmp_path / "runs")  # the recorded path is absolute
    code, stdout, _ = _run(["image", "--resume", "photo", "--generations", "3", "--workers", "0", "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["input"] == "photo" and result["generations"] == 3
    assert result["input_shape"] == [40, 56, 3]  # not the bundled astronaut


def test_resume_of_a_tensor_run_and_the_wrong_command(tmp_path, capsys):
    np.save(tmp_path / "w.npy", np.random.default_rng(0).standard_normal((12, 10)))
    out = tmp_path / "w"
    assert _run(["tensor", tmp_path / "w.npy", "--out", out, *FAST], capsys)[0] == 0
    assert _run(["tensor", "--resume", out, "--generations", "4", "--workers", "0"], capsys)[0] == 0
    assert "shapesearch tensor --resume" in _error(["image", "--resume", out], capsys)
    assert "FILE.npy" in _error(["tensor"], capsys)


def test_resume_keeps_the_checkpointed_settings_and_refuses_changed_ones(tmp_path, capsys):
    src = _png(tmp_path)
    out = tmp_path / "r"
    assert _run(["image", src, "--out", out, "--workers", "0", "--population", "6", "--generations", "1",
                 "--eps", "0.2"], capsys)[0] == 0
    assert "population=6 (now 10)" in _error(["image", "--resume", out, "--population", "10"], capsys)
    assert "carry_over=True (now False)" in _error(["image", "--resume", out, "--no-carry-over"], capsys)
    assert "eps=0.2 (now 0.3)" in _error(["image", "--resume", out, "--eps", "0.3"], capsys)
    # no flags: the checkpoint's eps 0.2 and population 6, more generations allowed
    code, stdout, _ = _run(["image", "--resume", out, "--generations", "2", "--workers", "0", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["eps"] == 0.2


@pytest.mark.parametrize("state", [
    "{}", "[]", '"text"', '{"cache_entries": "x"}',
    '{"cache_entries": 0, "fingerprint": null}',
])
def test_a_checkpoint_that_is_json_but_wrong_inside_is_one_line(tmp_path, capsys, state):
    src = _png(tmp_path)
    out = tmp_path / "r"
    assert _run(["image", src, "--out", out, *FAST], capsys)[0] == 0
    (out / "checkpoint.json").write_text(state)
    assert "checkpoint" in _error(["image", "--resume", out, "--workers", "0"], capsys)


def test_a_checkpoint_with_damaged_fields_is_one_line(tmp_path, capsys):
    src = _png(tmp_path)
    out = tmp_path / "r"
    assert _run(["image", src, "--out", out, *FAST], capsys)[0] == 0
    good = json.loads((out / "checkpoint.json").read_text())
    for field, value in [("population", [{"axes": 1}]), ("rng", [1]), ("population", []),
                         ("generation", "x"), ("history", 3)]:
        (out / "checkpoint.json").write_text(json.dumps({**good, field: value}))
        assert "not a valid checkpoint" in _error(["image", "--resume", out, "--workers", "0"], capsys)


def test_a_truncated_cache_log_is_named_as_such(tmp_path, capsys):
    src = _png(tmp_path)
    out = tmp_path / "r"
    assert _run(["image", src, "--out", out, *FAST], capsys)[0] == 0
    log = out / "checkpoint-cache.jsonl"
    log.write_bytes(log.read_bytes()[: log.stat().st_size // 2])
    line = _error(["image", "--resume", out, "--workers", "0"], capsys)
    assert "checkpoint-cache.jsonl" in line and "checkpoint.json" not in line


def test_overwrite_removes_the_previous_runs_files(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(["image", _png(tmp_path), "--out", out, *FAST], capsys)[0] == 0
    assert (out / "reconstruction.png").exists()
    (out / "notes.txt").write_text("mine")
    np.save(tmp_path / "a.npy", np.random.default_rng(1).standard_normal((9, 14)))
    assert _run(["tensor", tmp_path / "a.npy", "--out", out, "--overwrite", *FAST], capsys)[0] == 0
    assert not (out / "reconstruction.png").exists() and (out / "reconstruction.npy").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only a run's own files go


def test_npy_inputs_that_are_not_arrays(tmp_path, capsys):
    (tmp_path / "empty.npy").write_bytes(b"")
    assert "empty" in _error(["tensor", tmp_path / "empty.npy"], capsys)
    (tmp_path / "text.npy").write_text("just some text\n" * 10)
    line = _error(["tensor", tmp_path / "text.npy"], capsys)
    assert "allow_pickle" not in line and "not a .npy array file" in line
    np.save(tmp_path / "a.npy", np.ones((4, 4)))
    assert "--key" in _error(["tensor", tmp_path / "a.npy", "--key", "w"], capsys)
    with open(tmp_path / "huge.npy", "wb") as f:  # a header promising 8 TB, then 80 bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
        f.write(b"0" * 80)
    assert "header promises 8,000,000,000,000 bytes" in _error(["tensor", tmp_path / "huge.npy"], capsys)
    save_file({}, str(tmp_path / "none.safetensors"))
    assert "no tensors" in _error(["tensor", tmp_path / "none.safetensors"], capsys)


def test_bad_destinations_fail_before_searching(tmp_path, capsys):
    src = _png(tmp_path)
    (tmp_path / "afile.txt").write_text("x")
    for out in (tmp_path / "afile.txt" / "sub", unwritable_dir(tmp_path)):
        t0 = time.perf_counter()
        line = _error(["image", src, "--out", out, "--workers", "0", "--generations", "50"], capsys)
        assert line.startswith("shapesearch: error: --out") and time.perf_counter() - t0 < 5
        assert not out.exists()
    assert _run(["image", src, "--out", tmp_path / "r", *FAST], capsys)[0] == 0
    for out in (tmp_path / "afile.txt" / "x.png", unwritable_dir(tmp_path) / "x.png", tmp_path / "r.jpg"):
        assert "--out" in _error(["reconstruct", tmp_path / "r", "--out", out], capsys)
    (tmp_path / "d.png").mkdir()
    assert "is a directory" in _error(["reconstruct", tmp_path / "r", "--out", tmp_path / "d.png"], capsys)


def test_written_files_follow_the_umask(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(["image", _png(tmp_path), "--out", out, *FAST], capsys)[0] == 0
    assert _run(["reconstruct", out, "--out", tmp_path / "x.safetensors"], capsys)[0] == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*out.iterdir(), tmp_path / "x.safetensors"]}
    assert len(set(modes.values())) == 1, modes  # tt.safetensors used to be 0600 among 0644s


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nohost", "127.0.0.1:notaport"])
def test_a_cluster_that_is_not_there_is_one_line_not_a_hang(tmp_path, capsys, address):
    t0 = time.perf_counter()
    line = _error(["image", _png(tmp_path), "--out", tmp_path / "r", "--address", address], capsys)
    assert line.startswith("shapesearch: error: --address") and time.perf_counter() - t0 < 30
    assert not (tmp_path / "r").exists()


def test_every_option_has_help_text():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in sub.choices.items()
               for a in p._actions if not a.help and a.dest != "help"]
    assert missing == []


def _ray_daemons() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "raylet|gcs_server"], capture_output=True, text=True).stdout
    return {int(p) for p in found.split()}


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_leaves_a_usable_checkpoint_no_traceback_and_no_ray(tmp_path, sig, code):
    """On Ray: interrupted after its first checkpoint, the run exits with 128 + signal and one
    line, its Ray is gone, and the checkpoint resumes to the end."""
    src = _png(tmp_path)
    out = tmp_path / "r"
    before = _ray_daemons()
    cmd = [sys.executable, "-m", "shapesearch.cli", "image", str(src), "--out", str(out), "--workers", "1",
           "--generations", "10000", "--stall", "10000", "--population", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV)
    deadline = time.time() + 120
    while not (out / "checkpoint.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip() and "gen/s" not in x and "gen]" not in x]
    assert proc.returncode == code, err
    assert "Traceback" not in err and "constructor arguments" not in err, err
    assert lines == [f"shapesearch: interrupted by {sig.name} (a checkpointed search continues with --resume DIR)"]
    deadline = time.time() + 20
    while _ray_daemons() - before and time.time() < deadline:
        time.sleep(0.5)
    assert _ray_daemons() - before == set()  # the run's Ray is shut down
    done = subprocess.run([sys.executable, "-m", "shapesearch.cli", "image", "--resume", str(out), "--workers", "0",
                           "--generations", str(json.loads((out / "checkpoint.json").read_text())["generation"] + 1),
                           "--json"], capture_output=True, text=True, env=CHILD_ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rel_error"] <= 0.1


def test_a_search_that_would_not_fit_in_memory_is_refused(tmp_path, capsys, monkeypatch):
    import shapesearch.jobs.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 100_000)  # bytes
    src = _png(tmp_path)
    for extra in ([], ["--pareto", "0.05:0.2"]):
        line = _error(["image", src, *FAST, *extra, "--out", tmp_path / "run"], capsys)
        assert "GiB is available" in line and "--workers" in line, line
        assert not (tmp_path / "run").exists()
    assert memory.search_memory(1_000_000, 2) == memory.RAY_BYTES + 1_000_000 * (memory.DRIVER_BYTES
                                                                                + 2 * memory.WORKER_BYTES)
    assert memory.search_memory(1_000_000, 0) == 1_000_000 * (memory.DRIVER_BYTES + memory.WORKER_BYTES)


def test_an_array_too_large_to_read_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    import torch
    from safetensors.torch import save_file as save_torch

    import shapesearch.jobs.arrays as arrays
    import shapesearch.jobs.memory as memory

    np.save(tmp_path / "a.npy", np.ones((100, 100)))
    save_torch({"w": torch.ones(100, 100, dtype=torch.bfloat16), "b": torch.ones(3)}, str(tmp_path / "m.safetensors"))
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000)  # bytes: 10,000 entries need 160,000
    monkeypatch.setattr(arrays.np, "load", lambda *a, **k: pytest.fail("read before the memory check"))
    for args in (["tensor", tmp_path / "a.npy"], ["tensor", tmp_path / "m.safetensors", "--key", "w"]):
        line = _error([*args, *FAST, "--out", tmp_path / "run"], capsys)
        assert "10,000 entries need about" in line and "GiB is available" in line, line
        assert not (tmp_path / "run").exists()
    arrays.load_array(tmp_path / "m.safetensors", "b")  # 3 entries fit


def test_result_reports_the_measured_peak_memory(tmp_path, capsys):
    from shapesearch.jobs.memory import PeakMemory, children_peak

    big = np.random.default_rng(0).standard_normal((300, 400, 8))  # 7.7 MB of float64
    np.save(tmp_path / "big.npy", big)
    code, out, _ = _run(["tensor", tmp_path / "big.npy", *FAST, "--out", tmp_path / "run", "--json"], capsys)
    assert code == 0
    memory = json.loads(out)["memory"]
    # in process: the run held the data itself
    assert memory["peak_bytes_upper_bound"] >= big.nbytes and memory["workers"] == 0
    assert memory["estimated_bytes"] > 0
    # child processes count too: their peaks (children_peak), and what they hold now (PeakMemory,
    # the sampler benchmarks/scaling.py runs from outside)
    held = PeakMemory(every=0.05)
    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * 200_000_000; time.sleep(1.5)"])
    try:
        time.sleep(1.0)
        assert held.sample() >= 200_000_000
        assert children_peak() >= 200_000_000
    finally:
        child.wait()
        held.stop()


def test_sigint_stops_a_run_whose_parent_ignores_it(tmp_path):
    """A CLI started with SIGINT ignored (a background job, a test runner after some library
    set SIG_IGN) still stops on it, with its checkpoint, instead of running on."""
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "shapesearch.cli", "image", str(_png(tmp_path)), "--out", str(out), "--workers", "0",
           "--generations", "10000", "--stall", "10000", "--population", "8"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while not (out / "checkpoint.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run ignored SIGINT") from None
    assert proc.returncode == 130, err


def test_a_bad_ray_address_from_the_environment_is_named_as_such(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "garbage")
    line = _error(["image", _png(tmp_path), "--out", tmp_path / "r", "--workers", "1"], capsys)
    assert line.startswith("shapesearch: error: RAY_ADDRESS (environment) 'garbage' is not HOST:PORT"), line


def test_two_tensors_of_one_file_get_two_default_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tensors = {f"layer/{i}": np.random.default_rng(i).random((12, 12)) for i in range(10)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    line = _error(["tensor", "m.safetensors"], capsys)
    assert "layer/0, layer/1" in line and "(2 more)" in line
    for key in ("layer/0", "layer/1"):
        assert main(["tensor", "m.safetensors", "--key", key, "--workers", "0", "--generations", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "shapesearch-out").iterdir()) == ["m-layer_0-eps0.1",
                                                                               "m-layer_1-eps0.1"]

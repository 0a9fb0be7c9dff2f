"""The job service end to end: a real `shapesearch serve` process on loopback, its HTTP API,
its security rules, and its durability (server killed mid-run, Ray worker killed mid-job)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from shapesearch.cli.main import main
from shapesearch.service.client import Client

from .conftest import smooth_image

ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "MPLBACKEND": "Agg"}
SEARCH = {"generations": 4, "population": 8, "seed": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`shapesearch serve` in a subprocess on a free loopback port."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.data, self.extra = data, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, token: str | None = None) -> Server:
        cmd = [sys.executable, "-m", "shapesearch.cli", "serve", "--data", str(self.data), "--port", str(self.port),
               *self.extra]
        self.proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if httpx.get(f"{self.url}/api/jobs", headers=headers, timeout=2).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the server did not answer in 90 s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup runs."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def png(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    Image.fromarray((smooth_image(h, w, 3, seed) * 255).round().astype(np.uint8)).save(path)
    return path


def cli_result(tmp_path: Path, image: Path, **settings) -> dict:
    """The same search by the command line, in process (`--workers 0`)."""
    out = tmp_path / f"cli-{image.stem}"
    args = ["image", str(image), "--out", str(out), "--workers", "0", "--json"]
    for k, v in settings.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 0
    return json.loads((out / "result.json").read_text())


def same_result(a: dict, b: dict) -> bool:
    return (a["shape"]["text"], a["shape"]["modes"], a["params"], a["ranks"]) == \
           (b["shape"]["text"], b["shape"]["modes"], b["params"], b["ranks"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("service")).start()
    yield s
    s.stop()


def test_api_round_trip_matches_the_cli(server, tmp_path, capsys):
    image = png(tmp_path / "photo.png")
    client = Client(server.url)
    job = client.submit("image", image, eps=0.1, **SEARCH)
    done = client.wait(job, timeout=180)
    assert done["state"] == "SUCCEEDED", done
    assert done["progress"]["generation"] >= 1 and done["progress"]["best_cr"] > 1
    assert {"input.png", "reconstruction.png", "convergence.png", "tt.safetensors", "result.json", "log.txt"} \
        <= set(done["artifacts"])
    result = client.result(job)
    assert result["input"] == "photo" and same_result(result, cli_result(tmp_path, image, eps=0.1, **SEARCH))
    assert client.artifact(job, "input.png") == image.read_bytes()
    assert "generation" in client.logs(job)
    assert [j["id"] for j in client.jobs("SUCCEEDED")].count(job) == 1 and client.jobs("FAILED") == []
    events = httpx.get(f"{server.url}/api/jobs/{job}/events", timeout=10).text
    assert events.startswith("data: ") and json.loads(events.split("data: ")[1])["state"] == "SUCCEEDED"
    # the command-line client prints the same result.json
    capsys.readouterr()
    assert main(["result", job, "--server", server.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result
    assert main(["jobs", "--server", server.url]) == 0 and job in capsys.readouterr().out
    assert httpx.get(f"{server.url}/docs").status_code == 200
    client.delete(job)
    assert httpx.get(f"{server.url}/api/jobs/{job}").status_code == 404


def test_bad_options_are_422_with_the_command_lines_message(server, tmp_path, capsys):
    image = png(tmp_path / "p.png")
    for params, message in [({"eps": 2}, "--eps must be in"), ({"population": 1}, "--population must be 2 to 4096"),
                            ({"colour": 1}, "image jobs take no option 'colour'"),
                            ({"eps": "x"}, "--eps must be a finite number")]:
        r = httpx.post(f"{server.url}/api/jobs/image", data={"params": json.dumps(params)},
                       files={"file": ("p.png", image.read_bytes())})
        assert r.status_code == 422 and r.json()["detail"].startswith(message), r.text
    for kind, name, message in [("tensor", "p.png", "submit an image as an image job"),
                                ("image", "p.npy", "submit an array as a tensor job"),
                                ("image", "p", "no plain suffix")]:
        r = httpx.post(f"{server.url}/api/jobs/{kind}", data={"params": "{}"},
                       files={"file": (name, image.read_bytes())})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    from safetensors.numpy import save as save_bytes

    two = save_bytes({"a": np.ones((8, 8)), "b": np.ones(3)})
    for params, message in [({}, "--key is needed: m.safetensors holds 2 tensors"),
                            ({"key": "c"}, "--key 'c': m.safetensors")]:
        r = httpx.post(f"{server.url}/api/jobs/tensor", data={"params": json.dumps(params)},
                       files={"file": ("m.safetensors", two)})
        assert r.status_code == 422 and r.json()["detail"].startswith(message), r.text
    assert httpx.post(f"{server.url}/api/jobs/movie", json={}).status_code == 422
    assert httpx.post(f"{server.url}/api/jobs/image", json={"eps": 0.1}).json()["detail"].startswith("--path")
    # what a job would refuse from the file's header is refused at submission, not in the queue
    import io

    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for kind, name, content, message in [("image", "t.png", b"hello", "t.png is not an image"),
                                         ("image", "e.png", b"", "e.png is not an image"),
                                         ("tensor", "o.npy", pickled.getvalue(), "pickles are never loaded"),
                                         ("tensor", "g.safetensors", b"\x00" * 20, "not a readable safetensors")]:
        r = httpx.post(f"{server.url}/api/jobs/{kind}", data={"params": "{}"}, files={"file": (name, content)})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    # malformed requests are 422s / 404s, never a 500
    r = httpx.post(f"{server.url}/api/jobs/image", files={"file": ("p.png", image.read_bytes()),
                                                          "params": ("p.json", b"{}")})
    assert r.status_code == 422 and "not a file" in r.json()["detail"], r.text
    deep = b"[" * 100_000 + b"]" * 100_000
    r = httpx.post(f"{server.url}/api/jobs/image", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "RecursionError" in r.json()["detail"], r.text
    r = httpx.post(f"{server.url}/api/jobs/layers", content=iter([b'{"model":', b' "smollm2", "eps": 5}']),
                   headers={"content-type": "application/json"})  # chunked: no content-length
    assert r.status_code == 422 and r.json()["detail"].startswith("--eps"), r.text
    # the submit command prints the same line and exits 2, a 0 included (0 == False once dropped it)
    assert main(["submit", "image", str(image), "--eps", "2", "--server", server.url]) == 2
    assert capsys.readouterr().err.startswith("shapesearch: error: --eps must be in")
    assert main(["submit", "image", str(image), "--population", "0", "--server", server.url]) == 2
    assert capsys.readouterr().err.startswith("shapesearch: error: --population must be 2 to 4096")
    assert main(["jobs", "--server", "http://[::1"]) == 2
    assert capsys.readouterr().err.startswith("shapesearch: error: --server 'http://[::1' is not a server URL")


def test_an_animation_dropped_on_the_service_is_searched_as_frames(server, tmp_path):
    frames = [Image.fromarray((smooth_image(32, 40, 3, seed) * 255).round().astype(np.uint8)) for seed in range(3)]
    clip = tmp_path / "clip.gif"
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=100, loop=0)
    client = Client(server.url)
    done = client.wait(client.submit("image", clip, **SEARCH), timeout=120)
    assert done["state"] == "SUCCEEDED", done
    result = client.result(done["id"])
    assert result["input_shape"] == [3, 32, 40, 3] and result["rel_error"] <= 0.1


def test_a_tensor_of_a_safetensors_upload_is_searched(server, tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": smooth_image(24, 20, 2), "b": np.ones(3)}, str(tmp_path / "m.safetensors"))
    client = Client(server.url)
    done = client.wait(client.submit("tensor", tmp_path / "m.safetensors", key="w", **SEARCH), timeout=120)
    assert done["state"] == "SUCCEEDED", done
    result = client.result(done["id"])
    assert result["input_shape"] == [24, 20, 2] and result["input"] == "m-w"  # named as the CLI names it


def test_a_job_that_fails_records_the_one_line_error(server, tmp_path):
    bad = tmp_path / "black.png"
    Image.new("L", (16, 16)).save(bad)
    client = Client(server.url)
    done = client.wait(client.submit("image", bad, **SEARCH), timeout=120)
    assert done["state"] == "FAILED" and "all zeros" in done["error"]
    with pytest.raises(Exception, match="FAILED"):
        client.result(done["id"])
    cut = tmp_path / "cut.png"  # a header that reads, pixels that do not: it fails in the queue
    cut.write_bytes(png(tmp_path / "whole.png").read_bytes()[:300])
    done = client.wait(client.submit("image", cut, **SEARCH), timeout=120)
    assert done["state"] == "FAILED" and done["error"].startswith("cut.png could not be decoded"), done


def test_stop_and_artifact_paths_cannot_escape(server, tmp_path):
    client = Client(server.url)
    job = client.submit("image", png(tmp_path / "big.png", 96, 128), generations=500, stall=500, population=8)
    deadline = time.time() + 120
    while client.get(job)["state"] != "RUNNING" and time.time() < deadline:
        time.sleep(0.2)
    assert client.stop(job)["state"] == "STOPPED"
    assert httpx.post(f"{server.url}/api/jobs/{job}/stop").status_code == 409  # it has ended already
    for name in ("../../jobs.db", "..%2F..%2Fjobs.db", "%2E%2E/%2E%2E/jobs.db", "/etc/passwd", "log.txt%00.png",
                 "source.json", "x" * 5000):
        r = httpx.get(f"{server.url}/api/jobs/{job}/artifacts/{name}")
        assert r.status_code == 404, (name, r.status_code)


def test_token_upload_limit_and_loopback_rules(tmp_path, capsys):
    assert main(["serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")]) == 2
    assert "--token is required to serve on 0.0.0.0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    s = Server(tmp_path / "t", "--token", "s3cret", "--max-upload-mb", "0.01").start(token="s3cret")
    try:
        assert httpx.get(f"{s.url}/api/jobs").status_code == 401
        assert httpx.get(f"{s.url}/api/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{s.url}/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{s.url}/api/jobs", headers={"Authorization": "bearer s3cret"}).status_code == 200
        assert httpx.get(f"{s.url}/api/jobs", headers={"Authorization": "s3cret"}).status_code == 401
        assert httpx.get(f"{s.url}/api/jobs?token=s3cret").status_code == 200
        big = png(tmp_path / "big.png", 160, 160, seed=1)
        assert big.stat().st_size > 0.01 * 2**20
        r = httpx.post(f"{s.url}/api/jobs/image", headers={"Authorization": "Bearer s3cret"},
                       files={"file": ("big.png", big.read_bytes())})
        assert r.status_code == 413
    finally:
        s.stop()


def test_a_server_killed_mid_run_resumes_every_job_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the server while two jobs run; the next server finishes both, once each, with
    the result of an uninterrupted run of the same seed.  (A driver may outlive its server for a
    moment and finish its job first: enough generations make that rare, and such a job must then
    show one attempt and no resume.)"""
    settings = {"eps": 0.1, "generations": 200, "stall": 200, "population": 12, "seed": 5}
    images = [png(tmp_path / f"img{i}.png", 64, 96, seed=i) for i in range(2)]
    s = Server(tmp_path / "data").start()
    client = Client(s.url)
    jobs = [client.submit("image", im, **settings) for im in images]
    deadline = time.time() + 180
    while time.time() < deadline:
        progress = [client.get(j)["progress"].get("generation", 0) for j in jobs]
        if min(progress) >= 2:
            break
        time.sleep(0.2)
    assert min(progress) >= 2 and max(client.get(j)["state"] == "SUCCEEDED" for j in jobs) is False
    s.kill()
    s2 = Server(tmp_path / "data")
    s2.port, s2.url = s.port, s.url
    s2.start()
    try:
        client = Client(s2.url)
        done = [client.wait(j, timeout=300) for j in jobs]
        assert [d["state"] for d in done] == ["SUCCEEDED", "SUCCEEDED"]
        attempts = [d["attempts"] for d in done]
        assert set(attempts) <= {1, 2} and 2 in attempts, attempts  # started again once, not run twice
        assert len(client.jobs()) == 2
        for job, image, tries in zip(jobs, images, attempts):
            log = client.logs(job)
            assert ("resuming from the last checkpoint" in log) == (tries == 2)
            assert same_result(client.result(job), cli_result(tmp_path, image, **settings))
    finally:
        s2.stop()


def test_a_killed_ray_worker_costs_only_its_evaluations(server, tmp_path):
    settings = {"eps": 0.1, "generations": 25, "stall": 25, "population": 12, "seed": 2}
    image = png(tmp_path / "w.png", 192, 256, seed=4)  # big enough that a task runs long enough to be seen
    client = Client(server.url)
    job = client.submit("image", image, **settings)
    killed, deadline = 0, time.time() + 120
    while not killed and time.time() < deadline and client.get(job)["state"] in ("PENDING", "RUNNING"):
        pids = subprocess.run(["pgrep", "-f", "ray::_run_chunk"], capture_output=True, text=True).stdout.split()
        if pids:
            os.kill(int(pids[0]), signal.SIGKILL)
            killed += 1
        time.sleep(0.05)
    assert killed, "no evaluation task was seen running"
    done = client.wait(job, timeout=240)
    assert done["state"] == "SUCCEEDED", done
    assert same_result(client.result(job), cli_result(tmp_path, image, **settings))


def test_layers_and_compress_jobs_read_only_allowed_paths(tmp_path):
    """A layers job on a model under --inputs writes a plan; a tt compress job takes that plan
    (another job's output); a model outside --inputs is refused with the command's message."""
    from .tiny_models import TEXT, tiny_llama_dir

    inputs = tmp_path / "inputs"
    model = tiny_llama_dir(inputs / "llama", hidden=64, intermediate=128)
    (inputs / "calib.txt").write_text(TEXT * 3)
    s = Server(tmp_path / "data", "--inputs", str(inputs)).start()
    try:
        client = Client(s.url)
        plan_job = client.submit("layers", model=str(model), layers="layers.0.mlp", generations=2, population=4,
                                 eps=0.5)
        assert client.wait(plan_job, timeout=240)["state"] == "SUCCEEDED", client.logs(plan_job)
        plan = client.result(plan_job)
        assert plan["version"] == 1 and all("layers.0.mlp" in name for name in plan["layers"])
        plan_path = tmp_path / "data" / "jobs" / plan_job / "out" / "plan.json"
        budget_job = client.submit("layers", model=str(model), layers="layers.0.mlp", generations=1, population=2,
                                   budget=0.6)  # over the default ε grid
        assert client.wait(budget_job, timeout=240)["state"] == "SUCCEEDED", client.logs(budget_job)
        assert client.result(budget_job)["summary"]["fits_budget"]
        comp = client.submit("compress", compressor="tt", model=str(model), plan=str(plan_path), finetune_steps=2,
                             lr_schedule="cosine", warmup=0.5)
        assert client.wait(comp, timeout=240)["state"] == "SUCCEEDED", client.logs(comp)
        report = client.result(comp)
        assert report["method"] == "tt" and report["replaced_layers"] == len(plan["layers"])
        assert report["finetune"]["steps"] == 2 and report["finetune"]["schedule"] == "cosine"
        r = httpx.post(f"{s.url}/api/jobs/layers", json={"model": str(tmp_path)})
        assert r.status_code == 422 and r.json()["detail"].startswith("--model "), r.text
        r = httpx.post(f"{s.url}/api/jobs/compress", json={"compressor": "zip", "model": "smollm2"})
        assert r.status_code == 422 and r.json()["detail"].startswith("--compressor"), r.text
        # a bad value is refused at submission with the command's message, and no job is queued
        jobs = client.jobs()
        saten = {"compressor": "saten", "model": str(model), "plan": str(plan_path), "density": 0.1}
        for kind, params, message in [
                ("compress", {**saten, "alternations": 11}, "--alternations must be an integer in [0, 10]"),
                ("compress", {**saten, "density": 1.5}, "--density must be in [0, 1]"),
                ("compress", {**saten, "nm": "2:4"}, "--density and nm: give exactly one"),
                ("compress", {**saten, "lr_schedule": "zigzag"}, "--lr-schedule"),
                ("compress", {**saten, "samples": 0}, "--samples must be >= 1"),
                ("compress", {"compressor": "flat-llm", "model": str(model), "ratio": 7.0}, "--ratio must be in"),
                ("compress", {"compressor": "tt", "model": str(model), "plan": str(plan_path), "density": 0.1},
                 "density / nm / alternations are for saten"),
                ("compress", {"compressor": "tt", "model": str(model), "plan": str(inputs / "calib.txt")},
                 f"plan {inputs / 'calib.txt'} is not JSON"),
                ("layers", {"model": str(model), "eps": 5.0}, "--eps and eps_grid must be in (0, 1)"),
                ("layers", {"model": str(model), "population": 1}, "--population must be >= 2"),
                ("layers", {"model": str(model), "budget": -1.0}, "--budget must be a fraction in (0, 1)")]:
            r = httpx.post(f"{s.url}/api/jobs/{kind}", json=params)
            assert r.status_code == 422 and r.json()["detail"].startswith(message), (params, r.text)
        assert client.jobs() == jobs
    finally:
        s.stop()


@pytest.mark.parametrize("argv", [
    ["jobs", "--server", "http://127.0.0.1:1"], ["result", "abc", "--server", "http://127.0.0.1:1"],
    ["jobs", "--server", "notaurl"], ["submit", "image", "missing.png"], ["submit", "tensor"],
    ["submit", "compress", "tt"], ["serve", "--port", "0"], ["serve", "--port", "70000"],
    ["serve", "--host", "10.1.2.3"], ["serve", "--data", "afile/sub"], ["serve", "--db", "mysql://u@h/db"],
    ["serve", "--max-running", "0"], ["submit", "image", "p.png", "--eps", "x"],
])
def test_service_commands_refuse_bad_input_in_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    png(tmp_path / "p.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("shapesearch: error:"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written

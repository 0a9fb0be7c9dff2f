"""Every ``shapesearch …`` command the README shows runs and exits 0, in README order, on small inputs.

The commands are taken from README.md's ```bash blocks (a line may chain setup steps with
``&&``: only its ``shapesearch`` parts are run; ``# comments`` are dropped) and run as
subprocesses of the installed console script in one temporary directory, so that later
commands find what earlier ones wrote (``reconstruct runs/photo``, ``--plan plan50.json``,
``eval --model runs/smol-20``).  The first runs as a new interpreter; the others run in
processes forked from one that imported the CLI once (:class:`ConsoleScript`: imports are most
of a tiny model's command here).  What makes them small, and nothing else, is changed:

* the input files they name (``photo.png``, ``weights.npy``, …) are small generated files;
* ``--model smollm2`` / ``--model minilm`` name tiny random Llama / BERT directories (with a
  tokenizer) instead of the real weights;
* flags that make a run quick are appended unless the command sets them (see :data:`QUICK`;
  PTNN also gets ``--dense-steps 5 --steps 2``, ``pareto`` and ``layers --budget`` a 3-ε
  grid); ``--finetune-steps N`` becomes 3;
  calibration / evaluation text is a small file, except for the first ``compress`` and the
  first ``eval``, which read gensim's Wikipedia as the README says;
* the host:port of ``--address`` becomes a loopback Ray head this test starts (``ray start
  --head --block``, ended by a signal to that process when the test is done).

``test_readme_python_blocks_name_the_real_api`` compiles the ```python blocks and checks that
every name they import or take from ``compressors`` / ``shapesearch`` exists (they are not
run: they need a model and calibration windows that the README leaves to the reader).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import importlib
import importlib.util
import json
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from .tiny_models import TEXT, small_array, small_png, tiny_bert_dir, tiny_llama_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SUBCOMMANDS = ("image", "tensor", "reconstruct", "layers", "compress", "eval", "pareto", "serve", "submit", "jobs",
               "result")
# README command (as written, without its comment) → why it is not run; empty: all of them run
SKIP: dict[str, str] = {}

# appended unless the command gives the flag itself
QUICK = {"image": {"--generations": "2", "--population": "6", "--workers": "0"},
         "tensor": {"--generations": "2", "--population": "6", "--workers": "0"},
         "layers": {"--generations": "2", "--population": "4", "--workers": "0"},
         "compress": {"--samples": "4", "--seqlen": "128"},
         "eval": {"--max-windows": "2"},
         "pareto": {"--windows": "1", "--workers": "0", "--samples": "4", "--seqlen": "128"},
         "submit": {"--generations": "2", "--population": "6"}}
ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "MPLBACKEND": "Agg",
       "HF_HUB_OFFLINE": "1",
       # one BLAS/OpenMP thread: on a shared 2-core machine spinning thread pools make the tiny
       # models' generate() in `eval` 10-50× slower; results do not depend on it
       "OMP_NUM_THREADS": "1"}
TIMEOUT = 300  # seconds per command


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```bash[ \t]*\n(.*?)^```", markdown, flags=re.S | re.M)


def readme_commands(markdown: str) -> list[tuple[dict[str, str], list[str]]]:
    """(environment assignments, argv) of every ``shapesearch`` command in the bash blocks, in order."""
    found = []
    for block in bash_blocks(markdown):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            parts: list[list[str]] = [[]]
            for w in words:
                if w in ("&&", "||", ";", "|"):
                    parts.append([])
                else:
                    parts[-1].append(w)
            for part in parts:
                env = {}
                while part and re.fullmatch(r"[A-Za-z_]\w*=.*", part[0]):
                    key, value = part.pop(0).split("=", 1)
                    env[key] = value
                if part and Path(part[0]).name == "shapesearch":
                    found.append((env, part))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{proc.args[0]} did not open port {port} within {seconds:g} s")


@contextlib.contextmanager
def ray_head(env: dict[str, str]):
    """A loopback Ray head with one CPU: {"gcs": "127.0.0.1:P", "client": "127.0.0.1:Q"} (the Ray
    Client server on Q only where ``ray[client]`` is installed; without it a ``ray://`` address fails)."""
    gcs, client = _free_port(), _free_port()
    with_client = importlib.util.find_spec("grpc") is not None  # what ray[client] adds
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
           "--include-dashboard=false", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp}"]
    cmd += [f"--ray-client-server-port={client}"] if with_client else []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_for_port(gcs, proc, 90)
        if with_client:
            _wait_for_port(client, proc, 90)
        yield {"gcs": f"127.0.0.1:{gcs}", "client": f"127.0.0.1:{client}"}
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` ends the processes it started
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this test created
            proc.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


def _address(value: str, head: dict[str, str]) -> str:
    """The README's address (``ray://host:port`` or ``host:port``) pointed at the test's head."""
    return "ray://" + head["client"] if value.startswith("ray://") else head["gcs"]


def _input_file(path: Path) -> None:
    """A small stand-in for an input the README names (by suffix)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        small_png(path, 24, 30, "RGB")
    elif path.suffix.lower() == ".gif":  # an animation: three frames
        from PIL import Image

        small_png(path.with_suffix(".png"), 24, 30, "RGB")
        frame = Image.open(path.with_suffix(".png")).convert("RGB")
        frames = [frame, frame.rotate(90), frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
        path.with_suffix(".png").unlink()
    elif path.suffix == ".npy":
        np.save(path, small_array((12, 10, 3)))
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"data": small_array((12, 10, 3))}, str(path))


def _labelled_file(path: Path, argv: list[str]) -> None:
    """A small labelled stand-in (CSV or JSONL) with the columns the command names."""
    if path.exists():
        return
    text_col = argv[argv.index("--text-column") + 1] if "--text-column" in argv else "text"
    label_col = argv[argv.index("--label-column") + 1] if "--label-column" in argv else "label"
    rows = [{text_col: f"{word} film number {i}", label_col: label}
            for i in range(12) for word, label in (("great", "good"), ("awful", "bad"))]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[text_col, label_col])
            writer.writeheader()
            writer.writerows(rows)


def _recipe_file(path: Path) -> None:
    """The README's recipe (its ```json block), each planned step made quick (in process, a short GA)."""
    if path.exists():
        return
    recipe = json.loads(re.findall(r"^```json[ \t]*\n(.*?)^```", README.read_text(), flags=re.S | re.M)[0])
    for step in recipe["steps"]:
        if isinstance(step.get("plan"), dict):
            step["plan"].update(generations=2, population=4, workers=0)
    path.write_text(json.dumps(recipe))


def adapt(argv: list[str], cwd: Path, models: dict[str, str], text: Path, head: dict[str, str] | None,
          seen: set[str]) -> list[str]:
    """The README command with small inputs and quick settings (see the module docstring)."""
    sub = argv[1]
    args = list(argv[1:])
    for i in range(1, len(args)):
        prev = args[i - 1]
        if prev == "--model" and args[i] in models:
            args[i] = models[args[i]]
        elif prev == "--address":
            assert head is not None
            args[i] = _address(args[i], head)
        elif prev == "--finetune-steps":
            args[i] = "3"
        elif prev in ("--train", "--dev", "--test"):
            _labelled_file(cwd / args[i], args)
    if sub in ("image", "tensor", "submit"):
        positional = [a for i, a in enumerate(args[1:], 1) if not a.startswith("-")
                      and not args[i - 1].startswith("-") and a not in SUBCOMMANDS]
        for p in positional:
            _input_file(cwd / p)
    if sub == "compress" and args[1] == "recipe":
        _recipe_file(cwd / args[2])
    quick = dict(QUICK.get(sub, {}))
    ptnn = sub == "compress" and args[1] == "ptnn"
    if ptnn:  # a few training steps show the same path as 300; it takes no calibration windows
        quick = {"--dense-steps": "5", "--steps": "2"}
    if sub == "layers" and "--activations" in args:  # the calibration compress then makes the same windows of
        quick.update({"--samples": "4", "--seqlen": "128", "--calib": str(text)})
    if sub == "pareto":
        quick.update({"--calib": str(text), "--text": str(text)})
    if sub == "pareto" or (sub == "layers" and "--budget" in args):
        if "--eps-grid" not in args:
            args += ["--eps-grid", "0.3", "0.6", "0.9"]
    if "--resume" in args:
        quick["--generations"] = "3"  # one generation more than the run it continues
    if "--address" in args:
        quick["--workers"] = "1"  # on the cluster, not in process
    for flag, value in quick.items():
        if flag not in args:
            args += [flag, value]
    text_flag = {"compress": "--calib", "eval": "--text"}.get(sub)
    if ptnn or (sub == "eval" and not _causal_lm(cwd / args[args.index("--model") + 1])):
        text_flag = None  # a classifier or an encoder is measured on labelled texts or word pairs
    if text_flag and text_flag not in args:
        if sub in seen:  # the first compress / eval reads gensim's Wikipedia, the default
            args += [text_flag, str(text)]
    seen.add(sub)
    return [str(CONSOLE_SCRIPT)] + args


def _causal_lm(model: Path) -> bool:
    """Whether the model directory a README command names holds a causal LM (by its config)."""
    config = model / "config.json"
    if not config.is_file():
        return True  # a built-in name or a .gguf: the decoders
    text = config.read_text()
    return "ForCausalLM" in text or "LMHeadModel" in text


CONSOLE_SCRIPT = Path(sys.executable).with_name("shapesearch")


def _console_script_in_child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The console script's body (``sys.exit(main())``) with a README command's argv, working
    directory and environment; stdout / stderr go to files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    from shapesearch.cli import main

    sys.argv = argv
    sys.exit(main())


class ConsoleScript:
    """Runs the console script, each command in its own process, forked from one server process
    that imported the CLI and ``compressors`` once (multiprocessing's forkserver): torch and
    transformers cost ~10 s of imports per process here, and 30 of the README's commands load a
    model.  ``env`` is the server's environment (read by modules at import); a command's own is
    set in its process before ``main()``."""

    PRELOAD = ["shapesearch.cli", "compressors", __name__]

    def __init__(self, env: dict[str, str], scratch: Path) -> None:
        from multiprocessing import forkserver

        self.scratch, self._forkserver, self._runs = scratch, forkserver._forkserver, 0
        self._forkserver._stop()  # a server started earlier in this pytest process has another environment
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(self.PRELOAD)
            self._forkserver.ensure_running()  # the server starts now, with ``env``, and imports PRELOAD
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
        """(exit code, stdout, stderr) of ``argv`` (None: killed after ``timeout`` s)."""
        self._runs += 1
        out, err = (str(self.scratch / f"{self._runs}.{name}") for name in ("out", "err"))
        proc = self.ctx.Process(target=_console_script_in_child, args=(argv, str(cwd), env, out, err))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
            code = None
        else:
            code = proc.exitcode
        read = [Path(p).read_text(errors="replace") if Path(p).exists() else "" for p in (out, err)]
        return code, read[0], read[1]

    def close(self) -> None:
        self._forkserver._stop()


def test_readme_commands_run(tmp_path):
    commands = readme_commands(README.read_text())
    subs = [argv[1] if len(argv) > 1 else "" for _, argv in commands]
    missing = [s for s in SUBCOMMANDS if s not in subs]
    assert not missing, f"no README command found for {missing}: is the extraction broken?"
    texts = [shlex.join(argv) for _, argv in commands]
    assert all(argv[1] in SUBCOMMANDS for _, argv in commands), texts

    models_dir = tmp_path / "models"
    models = {"smollm2": str(tiny_llama_dir(models_dir / "llama", hidden=128, intermediate=256)),
              "minilm": str(tiny_bert_dir(models_dir / "bert"))}
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 3)
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(ENV)
    needs_ray = any("--address" in argv or "RAY_ADDRESS" in e for e, argv in commands)

    ran, failures, skipped, seen = [], [], [], set()
    server: subprocess.Popen | None = None
    job_id = ""
    (tmp_path / "std").mkdir()
    with (ray_head(env) if needs_ray else contextlib.nullcontext()) as head, \
            contextlib.closing(ConsoleScript(env, tmp_path / "std")) as script:
        for (extra_env, argv), shown in zip(commands, texts):
            if shown in SKIP:
                skipped.append(shown)
                continue
            cmd = adapt(argv, cwd, models, text, head, seen)
            if argv[1] == "serve":  # runs until stopped: in the background, on a free port
                port = _free_port()
                server = subprocess.Popen([*cmd, "--port", str(port)], cwd=cwd, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                _wait_for_port(port, server, 90)
                env["SHAPESEARCH_SERVER"] = f"http://127.0.0.1:{port}"
                ran.append(shown)
                print(f"readme: serving on port {port}  {shown}")
                continue
            cmd = [job_id if a == "JOB_ID" else a for a in cmd]
            run_env = dict(env)
            for key, value in extra_env.items():
                run_env[key] = _address(value, head) if key == "RAY_ADDRESS" and head else value
            start = time.perf_counter()
            if argv == commands[0][1]:  # the first: the installed console script itself, in a new interpreter
                proc = subprocess.run(cmd, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=TIMEOUT)
                code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
            else:
                code, stdout, stderr = script.run(cmd, cwd, run_env, TIMEOUT)
            seconds = time.perf_counter() - start
            ran.append(shown)
            print(f"readme: {seconds:6.1f} s  exit {code}  {shown}")
            if code != 0:
                tail = "\n".join(stderr.strip().splitlines()[-12:])
                failures.append(f"{shown}\n  ran as: {shlex.join(cmd)}\n  exit {code}:\n{tail}")
            elif argv[1] == "submit":
                job_id = stdout.strip()
    if server is not None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"readme: {len(ran)} of {len(commands)} commands ran ({len(skipped)} skipped)")
    assert len(ran) + len(skipped) == len(commands)
    assert not failures, f"{len(failures)} of {len(ran)} README commands failed:\n\n" + "\n\n".join(failures)


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python[ \t]*\n(.*?)^```", markdown, flags=re.S | re.M)


def test_readme_python_blocks_name_the_real_api():
    blocks = _python_blocks(README.read_text())
    assert blocks, "no ```python block found in README.md"
    problems = []
    for block in blocks:
        tree = ast.parse(block)
        compile(tree, "README.md", "exec")
        modules = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = importlib.import_module(node.module)
                problems += [f"from {node.module} import {a.name}" for a in node.names if not hasattr(mod, a.name)]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    modules[a.asname or a.name] = importlib.import_module(a.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and modules[node.value.id].__name__ in ("compressors", "shapesearch")
                    and not hasattr(modules[node.value.id], node.attr)):
                problems.append(f"{node.value.id}.{node.attr}")
    assert not problems, f"README python blocks use names that do not exist: {problems}"


@pytest.mark.parametrize("line,expected", [
    ("shapesearch image photo.png --eps 0.05 --out runs/photo     # PNG/JPEG", [["shapesearch", "image", "photo.png",
                                                                             "--eps", "0.05", "--out", "runs/photo"]]),
    ("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/shapesearch image",
     [[".venv/bin/shapesearch", "image"]]),
    ("python3 -m venv .venv && .venv/bin/python -m pytest", []),
    ("RAY_ADDRESS=head:6379 shapesearch image x.png", [["shapesearch", "image", "x.png"]]),
])
def test_extraction(line, expected):
    assert [argv for _, argv in readme_commands(f"```bash\n{line}\n```\n")] == expected


def test_address_substitution():
    head = {"gcs": "127.0.0.1:1", "client": "127.0.0.1:2"}
    assert _address("ray://head:10001", head) == "ray://127.0.0.1:2"
    assert _address("head:6379", head) == "127.0.0.1:1"
    assert _address("10.0.0.5:6379", head) == "127.0.0.1:1"

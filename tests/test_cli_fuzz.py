"""Fuzzing the command-line contract of every ``shapesearch`` subcommand.

The contract: a run exits 0 with a valid result (with ``--json``, one strict JSON object on
stdout), or exits 2 with exactly one line on stderr, starting ``shapesearch: error:``; and no
file outside ``--out`` is created, modified or deleted (a refused run also writes nothing over
inside ``--out``: the README's "nothing is written over").

Hypothesis generates each case as plain data — the files to lay out in a fresh directory
(good, truncated, empty, mistyped, huge-header, NaN, odd-mode, damaged checkpoints, plans and
model directories, unwritable places) and the argument list (odd numbers for every numeric
option, unknown flags, missing required arguments) — and :class:`Runner` runs it.

The runner calls ``shapesearch.cli.main.main(argv)`` in one long-lived helper process (one
import of torch for the whole session; no process start per case), with that process's file
descriptors 1 and 2 redirected for the case, so that everything a real run would print is
seen: ``print``, tqdm bars, Python warnings, logging handlers, C-level writes.  The helper
also gives every case a time limit and a memory cap, so a case that hangs or allocates a
huge array is reported as such instead of stalling CI.  Every valid case is cheap (arrays of
a few thousand entries at most, ``--workers 0``, ``--generations`` ≤ 3, ``--population`` ≤ 6, tiny
random Llama/BERT directories); an expensive input (the bundled 512×512 image, a huge
population, ``smollm2``) only comes with an argument the command must refuse first.

``collect_violations`` runs the same strategies without stopping at the first failure (for
triage; see its docstring).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import random
import shutil
import stat
import struct
import sys
import tempfile
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .tiny_models import TEXT, small_array, small_png

COMMANDS = ("image", "tensor", "reconstruct", "layers", "compress", "eval", "pareto")
# cases per command (≥ 500 in all); model commands cost more per case
SHARE = {"image": 100, "tensor": 100, "reconstruct": 120, "layers": 60, "compress": 100, "eval": 40, "pareto": 30}
CASE_TIMEOUT = 120.0  # seconds one case may take before it counts as a hang
MEMORY_CAP = 8 << 30  # bytes of address space for the helper process
ERROR_PREFIX = "shapesearch: error:"

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "MPLBACKEND": "Agg",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       # one BLAS/OpenMP thread: on a shared machine, spinning thread pools make tiny models' decode 10× slower
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# --------------------------------------------------------------------------------------------
# the helper process: builds the shared assets once, then runs one case per request


def _capture_fds():
    """(restore, read): fds 1 and 2 go to temporary files until ``restore()``."""
    sys.stdout.flush()
    sys.stderr.flush()
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)

    def restore() -> tuple[str, str]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        texts = []
        for fd, f in zip(saved, files):
            os.close(fd)
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
            f.close()
        return texts[0], texts[1]

    return restore


class _Fresh(Warning):
    pass


def _execute(argv: list[str], cwd: str) -> dict:
    """Run ``main(argv)`` in ``cwd`` as the console script would: exit code, stdout, stderr,
    and the traceback of anything that escaped ``main``."""
    import warnings

    from shapesearch.cli.main import main

    warnings.filterwarnings("default", category=_Fresh)  # resets "shown once" registries: a fresh process
    old = os.getcwd()
    restore = _capture_fds()
    code, tb = None, None
    try:
        os.chdir(cwd)
        try:
            code = main(argv)
        except SystemExit as exc:  # the console script's sys.exit would turn it into this code
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - an uncaught exception: the interpreter prints it, exits 1
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            code = 1
    finally:
        os.chdir(old)
        out, err = restore()
    return {"code": code, "stdout": out, "stderr": err, "traceback": tb}


def _build_assets(root: str) -> dict[str, str]:
    """Files the cases copy: tiny models, a plan, finished runs to resume / reconstruct."""
    from .tiny_models import tiny_bert_dir, tiny_llama_dir

    root_p = Path(root)
    restore = _capture_fds()  # the weight writer's progress bars
    try:
        a = {"llama": tiny_llama_dir(root_p / "llama"), "bert": tiny_bert_dir(root_p / "bert"),
             "text": root_p / "text.txt"}
    finally:
        restore()
    a["text"].write_text(TEXT * 3)
    quiet = ["--workers", "0", "--population", "4", "--generations", "2"]
    small_png(root_p / "gray.png", 16, 20, "L", seed=3)
    np.save(root_p / "arr.npy", small_array((6, 7, 5), seed=4))
    runs = [["image", str(root_p / "gray.png"), "--out", str(root_p / "image_run"), *quiet],
            ["tensor", str(root_p / "arr.npy"), "--out", str(root_p / "tensor_run"), *quiet],
            ["layers", "--model", str(a["llama"]), "--eps", "0.5", "--generations", "1", "--population", "2",
             "--workers", "0", "--out", str(root_p / "plan.json")],
            ["layers", "--model", str(a["bert"]), "--eps", "0.5", "--format", "tt", "--generations", "1",
             "--population", "2", "--workers", "0", "--out", str(root_p / "bert_plan.json")]]
    for argv in runs:
        r = _execute(argv, root)
        if r["code"] != 0:
            raise RuntimeError(f"building fuzz assets failed: {argv}\n{r['stderr'][-3000:]}")
    for ratio in ("0.2", "0.25", "0.3", "0.15", "0.4", "0.1"):  # one the tiny model's layer sizes can meet
        r = _execute(["compress", "flat-llm", "--model", str(a["llama"]), "--ratio", ratio, "--samples", "4",
                      "--seqlen", "32", "--calib", str(a["text"]), "--out", str(root_p / "flat"), "--overwrite"], root)
        if r["code"] == 0:
            break
    else:
        raise RuntimeError(f"building fuzz assets failed: flat-llm at every ratio\n{r['stderr'][-3000:]}")
    a.update({k: root_p / k for k in ("gray.png", "arr.npy", "image_run", "tensor_run", "plan.json",
                                      "bert_plan.json", "flat")})
    return {k: str(v) for k, v in a.items()}


def _serve(conn, asset_root: str) -> None:
    """The helper process's loop: ('case', argv, cwd) → result dict; None → exit."""
    import resource

    os.environ.update(ENV)
    os.environ.pop("RAY_ADDRESS", None)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    try:
        conn.send(("assets", _build_assets(asset_root)))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send(("result", _execute(*msg)))


class Runner:
    """Runs cases in the helper process; restarts it after a hang or a crash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.asset_root = root / "assets"
        self.asset_root.mkdir(parents=True, exist_ok=True)
        self.proc = self.conn = None
        self.assets: dict[str, str] = {}
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        asset_root = self.asset_root
        if self.assets:  # restart: the assets exist already; build them again in a fresh folder
            asset_root = Path(tempfile.mkdtemp(prefix="assets", dir=self.root))
        self.proc = ctx.Process(target=_serve, args=(child, str(asset_root)), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(600):
            raise RuntimeError("the fuzz helper process did not build its assets within 600 s")
        kind, value = parent.recv()
        if kind != "assets":
            raise RuntimeError(f"the fuzz helper process failed:\n{value}")
        self.assets = value

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)

    def execute(self, argv: list[str], cwd: Path) -> dict:
        try:
            self.conn.send((argv, str(cwd)))
            if self.conn.poll(CASE_TIMEOUT):
                return self.conn.recv()[1]
            result = {"code": None, "stdout": "", "stderr": "", "traceback": None,
                      "hang": f"no result within {CASE_TIMEOUT:g} s"}
        except (EOFError, OSError, BrokenPipeError) as exc:
            result = {"code": None, "stdout": "", "stderr": "", "traceback": None,
                      "hang": f"the helper process died ({exc!r}, exit code {self.proc.exitcode})"}
        self.proc.kill()  # the helper we started, by its handle
        self.proc.join(10)
        self._start()
        return result

    def run(self, case: Case) -> list[str]:
        """The contract violations of ``case`` (empty: it kept the contract)."""
        case_dir = Path(tempfile.mkdtemp(prefix="case", dir=self.root))
        try:
            for spec in case.files:
                MAKERS[spec.maker](case_dir / spec.path, self.assets, **spec.params)
            outs = out_paths(case.argv, case.command)
            before = snapshot(case_dir, outs)
            inside_before = snapshot_inside(case_dir, outs)
            result = self.execute(case.argv, case_dir)
            after = snapshot(case_dir, outs)
            inside_after = snapshot_inside(case_dir, outs)
            return check(case, result, before, after, inside_before, inside_after, outs, case_dir)
        finally:
            _make_removable(case_dir)
            shutil.rmtree(case_dir, ignore_errors=True)


def _make_removable(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o755)


# --------------------------------------------------------------------------------------------
# checking a result


def out_paths(argv: list[str], command: str) -> list[str]:
    """Paths (relative to the case directory) the run may write: --out, --resume, or the
    default ``shapesearch-out`` of image/tensor."""
    found: dict[str, str] = {}
    for i, tok in enumerate(argv):
        for flag in ("--out", "--resume"):
            if tok == flag and i + 1 < len(argv):
                found[flag] = argv[i + 1]
            elif tok.startswith(flag + "="):
                found[flag] = tok.split("=", 1)[1]
    outs = [os.path.normpath(p) for p in found.values() if p]
    if command in ("image", "tensor") and not outs:
        outs = ["shapesearch-out"]
    return outs


def _under(rel: str, roots: list[str]) -> bool:
    return any(rel == r or rel.startswith(r.rstrip("/") + "/") for r in roots)


def snapshot(root: Path, skip: list[str]) -> dict[str, tuple]:
    """{relative path: (type, size, mtime, mode, link target)} of everything outside ``skip``."""
    seen: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if _under(rel, skip):
                continue
            s = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(s.st_mode):
                seen[rel] = ("link", os.readlink(os.path.join(dirpath, name)))
            elif stat.S_ISDIR(s.st_mode):
                seen[rel] = ("dir", stat.S_IMODE(s.st_mode))
            else:
                seen[rel] = ("file", s.st_size, s.st_mtime_ns, stat.S_IMODE(s.st_mode))
        dirnames[:] = [d for d in dirnames if not _under(os.path.normpath(os.path.join(rel_dir, d)), skip)]
    return seen


def snapshot_inside(root: Path, outs: list[str]) -> dict[str, tuple]:
    """The files that are inside (or are) the out paths."""
    seen: dict[str, tuple] = {}
    for out in outs:
        p = root / out
        if p.is_symlink() or not p.exists():
            continue
        paths = [p] if not p.is_dir() else [Path(d) / f for d, _, fs in os.walk(p) for f in fs]
        for f in paths:
            with contextlib.suppress(OSError):
                s = os.lstat(f)
                seen[os.path.relpath(f, root)] = (s.st_size, s.st_mtime_ns)
    return seen


def _strict_json(text: str) -> object:
    def bad_constant(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=bad_constant)


def check(case: Case, r: dict, before: dict, after: dict, inside_before: dict, inside_after: dict,
          outs: list[str], case_dir: Path) -> list[str]:
    problems: list[str] = []
    err = r["stderr"]
    if r.get("hang"):
        return [r["hang"]]
    if r["traceback"]:
        last = r["traceback"].strip().splitlines()[-1]
        problems.append(f"uncaught exception: {last}")
    code = r["code"]
    if code == 2:
        # what a terminal shows: a progress bar erased by carriage returns leaves nothing behind
        shown_lines = [line.split("\r")[-1] for line in err.split("\n")]
        visible = [line for line in shown_lines if line.strip()]
        if not (len(visible) == 1 and visible[0].startswith(ERROR_PREFIX) and err.endswith("\n")):
            lines = [line.split("\r")[-1] for line in err.strip().splitlines()]  # a bar's last state
            shown = lines if len(lines) <= 3 else [*lines[:2], "…", lines[-1]]
            problems.append(f"exit 2 but stderr is not one '{ERROR_PREFIX}' line ({len(lines)} lines): "
                            + " ⏎ ".join(line[:160] for line in shown))
        changed = [p for p, v in inside_before.items() if inside_after.get(p) != v]
        if changed:
            problems.append(f"refused run wrote over / removed files inside --out: {changed[:3]}")
    elif code == 0:
        problems += _check_success(case, r, outs, case_dir)
    elif not r["traceback"]:
        problems.append(f"exit code {code!r} (expected 0 or 2); stderr: {err.strip()[-300:]!r}")
    ancestors = {os.path.normpath(os.path.join(*Path(o).parts[:k])) for o in outs
                 for k in range(1, len(Path(o).parts))}
    created = [p for p in after if p not in before and not (after[p][0] == "dir" and p in ancestors)]
    removed = [p for p in before if p not in after]
    modified = [p for p in before if p in after and before[p] != after[p]]
    for what, paths in (("created", created), ("removed", removed), ("modified", modified)):
        if paths:
            problems.append(f"{what} outside --out: {sorted(paths)[:4]}")
    return problems


def _check_success(case: Case, r: dict, outs: list[str], case_dir: Path) -> list[str]:
    problems = []
    if "--json" in case.argv:
        try:
            if not isinstance(_strict_json(r["stdout"].strip()), dict):
                problems.append("--json: stdout is not one JSON object")
        except ValueError as exc:
            problems.append(f"--json: stdout is not strict JSON ({str(exc)[:120]}): {r['stdout'][:120]!r}")
    out = case_dir / outs[0] if outs else None
    if out is not None and outs[0] == "shapesearch-out" and out.is_dir():  # the default: shapesearch-out/NAME-epsE
        out = next((d for d in out.iterdir() if (d / "result.json").is_file()), out)
    if case.command in ("image", "tensor") and "--pareto" in " ".join(case.argv):
        if out is not None and outs[0] == "shapesearch-out" and out.is_dir():
            out = next((d for d in out.iterdir() if (d / "pareto.json").is_file()), out)
        res = out / "pareto.json"
        points = json.loads(res.read_text())["points"] if res.is_file() else []
        if not points or not all((out / p["file"]).is_file() for p in points):
            problems.append(f"exit 0 but {outs[0]}/pareto.json or a point's TT file is missing")
        elif not all(p["rel_error"] <= p["eps"] * (1 + 1e-9) for p in points):
            problems.append("exit 0 but a Pareto point's rel_error is not ≤ its eps")
    elif case.command in ("image", "tensor"):
        res = out / "result.json"
        if not (res.is_file() and (out / "tt.safetensors").is_file()):
            problems.append(f"exit 0 but {outs[0]}/result.json or tt.safetensors is missing")
        else:
            d = json.loads(res.read_text())
            if not (isinstance(d.get("rel_error"), float) and d["rel_error"] <= d["eps"] * (1 + 1e-9)):
                problems.append(f"exit 0 but rel_error {d.get('rel_error')} is not ≤ eps {d.get('eps')}")
    elif case.command in ("reconstruct", "layers") and not (out is not None and out.is_file()):
        problems.append(f"exit 0 but --out {outs[0] if outs else None} was not written")
    elif case.command == "compress" and not (out is not None and (out / "report.json").is_file()):
        problems.append("exit 0 but --out/report.json was not written")
    elif case.command == "pareto" and not (out is not None and (out / "front.json").is_file()):
        problems.append("exit 0 but --out/front.json was not written")
    return problems


# --------------------------------------------------------------------------------------------
# files a case lays out


@dataclass(frozen=True)
class FileSpec:
    path: str
    maker: str
    params: dict = field(default_factory=dict)


@dataclass
class Case:
    command: str
    argv: list[str]
    files: list[FileSpec]
    label: str

    def __repr__(self) -> str:  # what hypothesis prints for a failing case
        files = ", ".join(f"{f.path}={f.maker}{f.params or ''}" for f in self.files)
        return f"Case({self.label}: shapesearch {' '.join(self.argv)} | files: {files})"


MAKERS: dict = {}


def maker(fn):
    MAKERS[fn.__name__] = fn
    return fn


def _npy_header(descr: str, shape: str, version: int = 1, declared: int | None = None) -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text = (text + " " * pad + "\n").encode("latin1")
    n = len(text) if declared is None else declared
    size = struct.pack("<H", n) if version == 1 else struct.pack("<I", n)
    return b"\x93NUMPY" + bytes([version, 0]) + size + text


NPY_GOOD_SHAPES = [(12, 10, 3), (7, 11), (64,), (2, 3, 4, 5), (1, 50), (31,), (5, 5), (4, 4, 4, 4, 2)]


@maker
def npy(path: Path, assets: dict, kind: str, shape: tuple = (12, 10, 3)) -> None:
    x = small_array(tuple(shape))
    simple = {
        "good": lambda: x, "good_f16": lambda: x.astype(np.float16), "good_int": lambda: (x * 10).astype(np.int32),
        "good_u8": lambda: (np.abs(x) * 20).astype(np.uint8), "bigendian": lambda: x.astype(">f8"),
        "fortran": lambda: np.asfortranarray(x), "nan": lambda: np.where(x > 1, np.nan, x),
        "inf": lambda: np.where(x > 1, np.inf, x), "neg_inf": lambda: np.full(x.shape, -np.inf),
        "zeros": lambda: np.zeros_like(x), "negzero": lambda: -np.zeros_like(x), "0d": lambda: np.array(3.5),
        "1elem": lambda: np.ones(1), "3elem": lambda: np.arange(1.0, 4.0), "4elem": lambda: np.arange(1.0, 5.0),
        "empty": lambda: np.zeros((0, 5)), "bool": lambda: x > 0, "complex": lambda: x.astype(np.complex64),
        "str": lambda: np.array(["a", "bb", "c", "d", "e"]), "bytes": lambda: np.array([b"ab", b"cd"] * 3),
        "datetime": lambda: np.arange(6).astype("datetime64[D]"),
        "timedelta": lambda: np.arange(1, 7).astype("timedelta64[s]"),
        "structured": lambda: np.zeros(6, dtype=[("a", "f8"), ("b", "i4")]),
        "void": lambda: np.zeros(6, dtype="V4"),
        "huge_values": lambda: x.astype(np.float64) * 1e300, "tiny_values": lambda: x.astype(np.float64) * 1e-310,
        "int64_extreme": lambda: np.array([[np.iinfo(np.int64).max, 1], [np.iinfo(np.int64).min, 2]]),
        "uint64_max": lambda: np.full((3, 3), np.iinfo(np.uint64).max, dtype=np.uint64),
        "float128": lambda: x.astype(np.longdouble), "constant": lambda: np.full((9, 8), 7.0),
        "one_hot": lambda: np.eye(1, 40).reshape(5, 8), "prime": lambda: np.arange(1.0, 1 + 1999).reshape(1999),
        "long_1d": lambda: np.sin(np.arange(2000.0)),
    }
    if kind in simple:
        np.save(path, simple[kind](), allow_pickle=False)
    elif kind == "object":
        np.save(path, np.array([{"a": 1}, None, 3], dtype=object), allow_pickle=True)
    elif kind == "truncated":
        buf = path.with_suffix(".full.npy")
        np.save(buf, x)
        data = buf.read_bytes()
        buf.unlink()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "header_only":
        path.write_bytes(_npy_header("<f8", "(4, 5)"))
    elif kind == "huge_shape":
        path.write_bytes(_npy_header("<f8", "(1000000000000, 1000000000000)") + b"\0" * 64)
    elif kind == "huge_shape_fits_int":
        path.write_bytes(_npy_header("<f8", "(4000000000,)") + b"\0" * 64)
    elif kind == "negative_shape":
        path.write_bytes(_npy_header("<f8", "(-1, 5)") + b"\0" * 64)
    elif kind == "bad_descr":
        path.write_bytes(_npy_header("<q9", "(2, 2)") + b"\0" * 32)
    elif kind == "bad_header":
        path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f8}\n" + b"\0" * 32)
    elif kind == "huge_header_len":
        path.write_bytes(_npy_header("<f8", "(2, 2)", version=2, declared=0xFFFFFFF0) + b"\0" * 32)
    elif kind == "text":
        path.write_text("1 2 3\n4 5 6\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "dir":
        path.mkdir()
    else:
        raise ValueError(kind)


NPY_KINDS = ["good"] * 8 + [
    "good_f16", "good_int", "good_u8", "bigendian", "fortran", "nan", "inf", "neg_inf", "zeros", "negzero", "0d",
    "1elem", "3elem", "4elem", "empty", "bool", "complex", "str", "bytes", "datetime", "timedelta", "structured",
    "void", "huge_values", "tiny_values", "int64_extreme", "uint64_max", "float128", "constant", "one_hot", "prime",
    "long_1d", "object", "truncated", "header_only", "huge_shape", "huge_shape_fits_int", "negative_shape",
    "bad_descr", "bad_header", "huge_header_len", "text", "empty_file", "dir"]


def _st_raw(header: object, data: bytes = b"", declared: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if declared is None else declared) + text + data


@maker
def safetensors(path: Path, assets: dict, kind: str, shape: tuple = (12, 10, 3)) -> None:
    from safetensors.numpy import save_file

    x = small_array(tuple(shape))
    simple = {"good": {"w": x}, "multi": {"w": x, "b": x.reshape(-1)[:3].copy()}, "f16": {"w": x.astype(np.float16)},
              "i64": {"w": (x * 9).astype(np.int64)}, "u8": {"w": (np.abs(x) * 9).astype(np.uint8)},
              "bool": {"w": x > 0}, "0d": {"w": np.array(2.5, np.float32)}, "empty_shape": {"w": np.zeros((0, 3))},
              "nan": {"w": np.full((4, 4), np.nan, np.float32)}, "zeros": {"w": np.zeros((5, 5), np.float32)},
              "huge_values": {"w": np.full((4, 4), 3e38, np.float32)}}
    if kind in simple:
        save_file(simple[kind], str(path))
    elif kind == "bf16":
        path.write_bytes(_st_raw({"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]}}, b"\x3f\x80" * 16))
    elif kind == "f8":
        path.write_bytes(_st_raw({"w": {"dtype": "F8_E4M3", "shape": [4, 4], "data_offsets": [0, 16]}}, b"\x38" * 16))
    elif kind == "huge_header_len":
        path.write_bytes(_st_raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
                                 declared=2**62))
    elif kind == "header_past_end":
        path.write_bytes(_st_raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
                                 declared=5000))
    elif kind == "huge_shape":
        path.write_bytes(_st_raw({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}},
                                 b"\0" * 8))
    elif kind == "bad_json":
        path.write_bytes(_st_raw(b"{not json", b"\0" * 8))
    elif kind == "header_list":
        path.write_bytes(_st_raw([1, 2, 3]))
    elif kind == "wrong_offsets":
        path.write_bytes(_st_raw({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 999]}}, b"\0" * 16))
    elif kind == "metadata_only":
        path.write_bytes(_st_raw({"__metadata__": {"a": "b"}}))
    elif kind == "truncated":
        save_file({"w": x}, str(path))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 40])
    elif kind == "text":
        path.write_text("not a safetensors file\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "dir":
        path.mkdir()
    else:
        raise ValueError(kind)


ST_KINDS = ["good"] * 6 + ["multi"] * 3 + [
    "f16", "i64", "u8", "bool", "0d", "empty_shape", "nan", "zeros", "huge_values", "bf16", "f8", "huge_header_len",
    "header_past_end", "huge_shape", "bad_json", "header_list", "wrong_offsets", "metadata_only", "truncated", "text",
    "empty_file", "dir"]


def _png_bytes(width: int, height: int) -> bytes:
    """A gray PNG whose header claims width × height but whose data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@maker
def image(path: Path, assets: dict, kind: str, h: int = 24, w: int = 30) -> None:
    from PIL import Image

    plain = {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "PA", "RGBX", "F"}
    if kind in plain or kind == "I;16":
        small_png(path, h, w, kind)
    elif kind == "P_transparent":
        im = Image.new("P", (w, h))
        im.putpalette([i % 256 for i in range(768)])
        im.putdata([(i * 7) % 256 for i in range(w * h)])
        im.info["transparency"] = 0
        im.save(path, transparency=0)
    elif kind == "I;16B":
        Image.fromarray((small_array((h, w)) * 900 + 30000).clip(0, 65535).astype(np.uint16)).convert(
            "I;16B").save(path)
    elif kind in ("I", "I_over16"):
        top = 70000 if kind == "I_over16" else 60000
        Image.fromarray(np.linspace(0, top, h * w).reshape(h, w).astype(np.int32)).save(path)
    elif kind in ("black", "white"):
        Image.new("L", (w, h), 0 if kind == "black" else 255).save(path)
    elif kind == "black_rgb16":
        Image.new("I;16", (w, h), 0).save(path)
    elif kind == "tiny_1x1":
        Image.new("RGB", (1, 1), (9, 9, 9)).save(path)
    elif kind == "tiny_2x2":
        Image.fromarray(np.array([[1, 2], [3, 4]], np.uint8)).save(path)
    elif kind == "line_1xN":
        Image.fromarray(np.arange(1, 41, dtype=np.uint8).reshape(1, 40)).save(path)
    elif kind == "animated":
        frames = [Image.new("L", (8, 8), c) for c in (10, 200)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    elif kind == "truncated":
        small_png(path, h, w, "RGB")
        data = path.read_bytes()
        path.write_bytes(data[: max(len(data) // 3, 60)])
    elif kind == "bomb_warning":  # over Pillow's pixel limit: a warning, then a failed decode
        path.write_bytes(_png_bytes(10000, 10000))
    elif kind == "bomb_error":  # over twice the limit: DecompressionBombError
        path.write_bytes(_png_bytes(30000, 30000))
    elif kind == "zero_size":
        path.write_bytes(_png_bytes(0, 0))
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "npy_renamed":
        np.save(path.with_suffix(".tmp.npy"), small_array())
        path.with_suffix(".tmp.npy").rename(path)
    elif kind == "dir":
        path.mkdir()
    else:
        raise ValueError(kind)


# (kind, file suffix)
IMAGE_KINDS = [("RGB", ".png")] * 5 + [("L", ".png")] * 3 + [
    ("RGB", ".jpg"), ("1", ".png"), ("LA", ".png"), ("P", ".png"), ("P_transparent", ".png"), ("PA", ".tiff"),
    ("RGBA", ".png"), ("RGBA", ".webp"), ("RGB", ".bmp"), ("CMYK", ".jpg"), ("CMYK", ".tiff"), ("YCbCr", ".tiff"),
    ("LAB", ".tiff"), ("RGBX", ".tiff"), ("F", ".tiff"), ("I", ".tiff"), ("I_over16", ".tiff"), ("I;16", ".png"),
    ("I;16B", ".tiff"), ("black", ".png"), ("white", ".png"), ("black_rgb16", ".png"), ("tiny_1x1", ".png"),
    ("tiny_2x2", ".png"), ("line_1xN", ".png"), ("animated", ".gif"), ("truncated", ".png"), ("bomb_warning", ".png"),
    ("bomb_error", ".png"), ("zero_size", ".png"), ("text", ".png"), ("empty_file", ".png"), ("npy_renamed", ".png"),
    ("text", ".jpg"), ("dir", ".png")]


@maker
def text_file(path: Path, assets: dict, kind: str) -> None:
    if kind == "good":
        shutil.copy(assets["text"], path)
    elif kind == "short":
        path.write_text("A few words only.\n")
    elif kind == "empty":
        path.write_text("")
    elif kind == "blank":
        path.write_text("   \n\n\t\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "latin1":
        path.write_bytes(("caf\xe9 " * 400).encode("latin1"))
    elif kind == "dir":
        path.mkdir()
    else:
        raise ValueError(kind)


TEXT_KINDS = ["good"] * 18 + ["short", "empty", "blank", "binary", "latin1", "dir", "missing"]


@maker
def plain(path: Path, assets: dict, content: str = "x") -> None:
    path.write_text(content)


@maker
def directory(path: Path, assets: dict, mode: int | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        os.chmod(path, mode)


@maker
def symlink(path: Path, assets: dict, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


@maker
def copy_asset(path: Path, assets: dict, name: str) -> None:
    src = Path(assets[name])
    if src.is_dir():
        shutil.copytree(src, path)
    else:
        shutil.copy(src, path)


def _rewrite_json(path: Path, change) -> None:
    d = json.loads(path.read_text())
    d = change(d)
    path.write_text(json.dumps(d) if not isinstance(d, str | bytes) else d)


CKPT_KINDS = ["valid"] * 6 + [
    "no_checkpoint", "empty_obj", "list", "null", "truncated", "binary", "cache_entries_str", "cache_entries_more",
    "cache_entries_neg", "cache_entries_none", "log_cut_mid_line", "log_dropped_lines", "log_missing", "log_garbage",
    "log_extra_line", "log_value_not_dict", "log_params_str", "population_empty", "population_garbage",
    "population_wrong_key", "rng_garbage", "history_not_list", "config_other_eps", "config_not_dict",
    "config_missing", "fingerprint_other", "generation_str", "elapsed_null", "elapsed_nan", "stall_big",
    "evaluations_list", "surrogate_null", "empty_dir", "is_file"]


@maker
def checkpoint_dir(path: Path, assets: dict, kind: str, source: str = "image_run") -> None:
    if kind == "is_file":
        path.write_text("{}")
        return
    if kind == "empty_dir":
        path.mkdir()
        return
    shutil.copytree(assets[source], path)
    ck, log = path / "checkpoint.json", path / "checkpoint-cache.jsonl"
    for f in ("result.json", "tt.safetensors"):  # a run cut short: only the checkpoint is there
        (path / f).unlink(missing_ok=True)
    edits = {
        "empty_obj": lambda d: {}, "list": lambda d: [], "null": lambda d: None,
        "cache_entries_str": lambda d: {**d, "cache_entries": "x"},
        "cache_entries_more": lambda d: {**d, "cache_entries": d["cache_entries"] + 5},
        "cache_entries_neg": lambda d: {**d, "cache_entries": -1},
        "cache_entries_none": lambda d: {**d, "cache_entries": None},
        "population_empty": lambda d: {**d, "population": []},
        "population_garbage": lambda d: {**d, "population": [{"axes": 1}]},
        "population_wrong_key": lambda d: {**d, "population": [{"axes": [[99, [3, 33]]], "modes": [[0]],
                                                                "reverse": False}]},
        "rng_garbage": lambda d: {**d, "rng": [1, 2]}, "history_not_list": lambda d: {**d, "history": 5},
        "config_other_eps": lambda d: {**d, "config": {**d["config"], "eps": 0.2}},
        "config_not_dict": lambda d: {**d, "config": 3}, "config_missing": lambda d: {
            k: v for k, v in d.items() if k != "config"},
        "fingerprint_other": lambda d: {**d, "fingerprint": "0" * 32},
        "generation_str": lambda d: {**d, "generation": "x"}, "elapsed_null": lambda d: {**d, "elapsed": None},
        "elapsed_nan": lambda d: {**d, "elapsed": float("nan")}, "stall_big": lambda d: {**d, "stall": 10**30},
        "evaluations_list": lambda d: {**d, "evaluations": [1]}, "surrogate_null": lambda d: {**d, "surrogate": None},
    }
    lines = log.read_text().splitlines(keepends=True)
    if kind in edits:
        _rewrite_json(ck, edits[kind])
    elif kind == "no_checkpoint":
        ck.unlink()
    elif kind == "truncated":
        ck.write_text(ck.read_text()[: len(ck.read_text()) // 2])
    elif kind == "binary":
        ck.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "log_cut_mid_line":
        text = "".join(lines)
        log.write_text(text[: len(text) - len(lines[-1]) // 2])
    elif kind == "log_dropped_lines":
        log.write_text("".join(lines[: len(lines) // 2]))
    elif kind == "log_missing":
        log.unlink()
    elif kind == "log_garbage":
        log.write_text("".join(lines[:-1]) + "not json\n")
    elif kind == "log_extra_line":  # a crash between the two writes: the extra line is dropped
        log.write_text("".join(lines) + lines[-1])
    elif kind in ("log_value_not_dict", "log_params_str"):
        key, value = json.loads(lines[0])
        value = 5 if kind == "log_value_not_dict" else {**value, "params": "x"}
        log.write_text(json.dumps([key, value]) + "\n" + "".join(lines[1:]))
    elif kind != "valid":
        raise ValueError(kind)


TT_KINDS = ["valid"] * 8 + [
    "direct_file", "missing", "empty_dir", "truncated", "text", "empty_file", "huge_header", "format_wrong",
    "no_metadata", "tensorization_garbage", "tensorization_empty_obj", "tensorization_list", "tensorization_wrong",
    "meta_not_dict", "meta_no_bits", "meta_bits_str", "meta_bits_3", "meta_bits_huge", "meta_kind_image",
    "cores_missing_one", "cores_extra", "cores_swapped", "core_nan", "core_f32", "core_2d", "core_0d",
    "core_zero_rank", "core_huge_rank"]


@maker
def tt_run(path: Path, assets: dict, kind: str, source: str = "image_run") -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    if kind == "empty_dir":
        path.mkdir()
        return
    if kind == "missing":
        return
    shutil.copytree(assets[source], path)
    tt = path / "tt.safetensors"
    with safe_open(str(tt), framework="numpy") as f:
        meta = dict(f.metadata())
    cores = load_file(str(tt))
    raw = {"truncated": lambda: tt.read_bytes()[:-30], "text": lambda: b"hello\n", "empty_file": lambda: b"",
           "huge_header": lambda: _st_raw({"core_0": {}}, b"", declared=2**63 - 1)}
    if kind in raw:
        tt.write_bytes(raw[kind]())
        return
    m = json.loads(meta["meta"])
    metas = {"format_wrong": {**meta, "format": "other/9"}, "no_metadata": None,
             "tensorization_garbage": {**meta, "tensorization": "{"},
             "tensorization_empty_obj": {**meta, "tensorization": "{}"},
             "tensorization_list": {**meta, "tensorization": "[1, 2]"},
             "tensorization_wrong": {**meta, "tensorization": json.dumps({"axes": [{"size": 3, "padded": 3,
                                                                                      "digits": [3]}],
                                                                             "modes": [[5]], "reverse": 2})},
             "meta_not_dict": {**meta, "meta": "5"}, "meta_no_bits": {**meta, "meta": json.dumps({"kind": m["kind"]})},
             "meta_bits_str": {**meta, "meta": json.dumps({**m, "bits": "x"})},
             "meta_bits_3": {**meta, "meta": json.dumps({**m, "bits": 3})},
             "meta_bits_huge": {**meta, "meta": json.dumps({**m, "bits": 10**6})},
             "meta_kind_image": {**meta, "meta": json.dumps({**m, "kind": "image", "bits": 8})}}
    names = sorted(cores, key=lambda k: int(k.split("_")[1]))
    if kind in metas:
        save_file(cores, str(tt), metadata=metas[kind])
        return
    if kind == "cores_missing_one":
        cores.pop(names[1] if len(names) > 1 else names[0])
    elif kind == "cores_extra":
        cores["core_99"] = np.ones((1, 2, 1))
    elif kind == "cores_swapped" and len(names) > 1:
        cores[names[0]], cores[names[1]] = cores[names[1]], cores[names[0]]
    elif kind == "core_nan":
        cores[names[0]] = np.full_like(cores[names[0]], np.nan)
    elif kind == "core_f32":
        cores = {k: v.astype(np.float32) for k, v in cores.items()}
    elif kind == "core_2d":
        cores[names[0]] = cores[names[0]].reshape(cores[names[0]].shape[1], -1)
    elif kind == "core_0d":
        cores[names[-1]] = np.array(1.0)
    elif kind == "core_zero_rank":
        c = cores[names[0]]
        cores[names[0]] = np.zeros((1, c.shape[1], 0))
    elif kind == "core_huge_rank":
        c = cores[names[-1]]
        cores[names[-1]] = np.ones((c.shape[0] + 7, c.shape[1], 1))
    if kind not in ("valid", "direct_file"):
        save_file(cores, str(tt), metadata=meta)


PLAN_KINDS = ["valid"] * 30 + [
    "subset", "bert_plan", "missing", "dir", "empty_file", "text", "truncated", "list", "null", "empty_obj",
    "version2", "version_str", "no_layers", "layers_list", "layers_empty", "layer_not_obj", "layer_missing",
    "format_bad", "plan_format_bad", "modes_mismatch", "modes_zero", "modes_negative", "modes_str", "modes_float",
    "modes_huge", "modes_empty", "eps_nan", "eps_str", "eps_neg", "eps_big", "unknown_layer", "ranks_garbage",
    "summary_garbage", "out_features_wrong", "balanced_garbage", "reverse_str"]


@maker
def plan_file(path: Path, assets: dict, kind: str) -> None:
    src = Path(assets["bert_plan.json" if kind == "bert_plan" else "plan.json"])
    if kind == "missing":
        return
    if kind == "dir":
        path.mkdir()
        return
    text = src.read_text()
    raw = {"empty_file": "", "text": "hello", "truncated": text[: len(text) // 2], "list": "[]", "null": "null",
           "empty_obj": "{}"}
    if kind in raw:
        path.write_text(raw[kind])
        return
    d = json.loads(text)
    first = next(iter(d["layers"]))
    rec = d["layers"][first]

    def layer(**kw):
        return {**d, "layers": {**d["layers"], first: {**rec, **kw}}}

    edits = {
        "valid": lambda: d, "bert_plan": lambda: d,
        "subset": lambda: {**d, "layers": {first: rec}}, "version2": lambda: {**d, "version": 2},
        "version_str": lambda: {**d, "version": "1"},
        "no_layers": lambda: {k: v for k, v in d.items() if k != "layers"},
        "layers_list": lambda: {**d, "layers": [rec]}, "layers_empty": lambda: {**d, "layers": {}},
        "layer_not_obj": lambda: {**d, "layers": {first: 5}}, "layer_missing": lambda: {**d, "layers": {first: {
            "format": "ttm"}}},
        "format_bad": lambda: layer(format="xyz"), "plan_format_bad": lambda: {**d, "format": "xyz"},
        "modes_mismatch": lambda: layer(out_modes=[3, 11], out_features=33),
        "modes_zero": lambda: layer(out_modes=[0, 32], out_features=0),
        "modes_negative": lambda: layer(out_modes=[-1, -32], out_features=32),
        "modes_str": lambda: layer(out_modes=["a"]), "modes_float": lambda: layer(out_modes=[1.5, 21.0 + 1 / 3]),
        "modes_huge": lambda: layer(out_modes=[2**70, 1], in_modes=[2**70, 1]),
        "modes_empty": lambda: layer(out_modes=[], in_modes=[]),
        "eps_nan": lambda: layer(eps=float("nan")), "eps_str": lambda: layer(eps="x"), "eps_neg": lambda: layer(eps=-1),
        "eps_big": lambda: layer(eps=5.0),
        "unknown_layer": lambda: {**d, "layers": {**d["layers"], "model.layers.9.self_attn.zz": rec}},
        "ranks_garbage": lambda: layer(ranks=[1, "x"]), "summary_garbage": lambda: {**d, "summary": {"a": 1}},
        "out_features_wrong": lambda: layer(out_features=7), "balanced_garbage": lambda: layer(balanced=[1]),
        "reverse_str": lambda: layer(reverse_sweep="no"),
    }
    path.write_text(json.dumps(edits[kind]()))


MODEL_KINDS = ["llama"] * 30 + ["bert"] * 8 + ["flat"] * 6 + [
    "minilm", "missing", "empty_dir", "config_garbage", "config_empty_obj", "config_list", "config_wrong_type",
    "config_no_weights", "weights_truncated", "weights_text", "weights_huge_header", "no_tokenizer",
    "tokenizer_garbage", "gguf_text", "gguf_empty", "gguf_magic_only", "txt_file", "compression_garbage",
    "wrong_dims", "smollm2"]


@maker
def model_dir(path: Path, assets: dict, kind: str) -> None:
    if kind in ("missing", "minilm", "smollm2"):
        return
    if kind == "empty_dir":
        path.mkdir()
        return
    if kind.startswith("gguf") or kind == "txt_file":
        path.write_bytes({"gguf_text": b"not a gguf\n", "gguf_empty": b"", "txt_file": b"hello\n",
                          "gguf_magic_only": b"GGUF\x03\x00\x00\x00" + b"\xff" * 24}[kind])
        return
    shutil.copytree(assets["bert" if kind == "bert" else "flat" if kind == "flat" else "llama"], path)
    cfg, weights = path / "config.json", path / "model.safetensors"
    if kind == "config_garbage":
        cfg.write_text("{")
    elif kind == "config_empty_obj":
        cfg.write_text("{}")
    elif kind == "config_list":
        cfg.write_text("[]")
    elif kind == "config_wrong_type":
        cfg.write_text(json.dumps({"model_type": "nonsense", "architectures": ["NonsenseModel"]}))
    elif kind == "config_no_weights":
        weights.unlink()
    elif kind == "weights_truncated":
        weights.write_bytes(weights.read_bytes()[:5000])
    elif kind == "weights_text":
        weights.write_text("hello")
    elif kind == "weights_huge_header":
        weights.write_bytes(_st_raw({}, b"", declared=2**63 - 1))
    elif kind == "no_tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (path / f).unlink()
    elif kind == "tokenizer_garbage":
        (path / "tokenizer.json").write_text("{")
    elif kind == "compression_garbage":
        _rewrite_json(cfg, lambda d: {**d, "shapesearch_compression": {"method": "zzz", "layers": [1]}})
    elif kind == "wrong_dims":
        _rewrite_json(cfg, lambda d: {**d, "hidden_size": 48, "intermediate_size": 80})


def _model_arg(kind: str) -> str:
    return {"minilm": "minilm", "smollm2": "smollm2", "gguf_text": "m.gguf", "gguf_empty": "m.gguf",
            "gguf_magic_only": "m.gguf", "txt_file": "m.txt"}.get(kind, "m")


# --------------------------------------------------------------------------------------------
# argument strategies

HUGE_INT = "1000000000000"
ODD_FLOATS = ["0", "-0", "1", "-1", "-0.1", "1.5", "nan", "-nan", "inf", "-inf", "1e308", "1e-300", "1e400",
              "99999999999999999999", "0x10", "abc", "", "1_0", " 0.3"]
ODD_INTS = ["0", "-1", "-7", HUGE_INT, "-" + HUGE_INT, "18446744073709551616", "1.5", "nan", "inf", "abc", "",
            "0x10", "1e3", "٣"]


# what a "clean" case (valid apart from at most the odd numbers it is not given) picks from
GOOD = {"RGB", "L", "1", "LA", "P", "P_transparent", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "RGBX", "I", "I;16",
        "I;16B", "white", "good", "good_f16", "good_int", "good_u8", "bigendian", "fortran", "constant", "long_1d",
        "prime", "multi", "f16", "i64", "u8", "valid", "direct_file", "subset", "fresh", "nested", "default",
        "existing_overwrite", "llama", "bert", "flat", "flat-llm", "tt", "saten", ".npy", ".safetensors", "same",
        "o.png", "o.npy", "o.safetensors", ".png", None, "ttm", "2:4"}


def pick(rnd: random.Random, options: list, clean: bool):
    """A uniform choice; in a clean case only among the options in GOOD."""
    if clean:
        options = [o for o in options if (o[0] if isinstance(o, tuple) else o) in GOOD] or options[:1]
    return rnd.choice(options)


def numeric(rnd: random.Random, valid: list[str], odd: list[str], clean: bool = False) -> str | None:
    """None (flag left out), a cheap valid value, or (not in a clean case) an odd one."""
    odd_percent = 0 if clean else 8
    roll = rnd.randint(0, 99)
    if roll < odd_percent:
        return rnd.choice(odd)
    if roll < odd_percent + 25:
        return None
    return rnd.choice(valid)


def _add(argv: list[str], flag: str, value: str | None) -> None:
    if value is None:
        return
    if value == "" or value.startswith("-"):  # "--eps=-inf": argparse would take "-inf" for a flag
        argv.append(f"{flag}={value}")
    else:
        argv += [flag, value]


def _is_odd(value: str | None, valid: list[str]) -> bool:
    return value is not None and value not in valid


def _huge(value: str | None) -> bool:
    try:
        return value is not None and float(value.replace("_", "")) > 1e5
    except ValueError:
        return False


CLEAN = 0.35  # fraction of cases built from valid choices only

UNKNOWN = [["--frobnicate"], ["--frobnicate=1"], ["-z"], ["--eps"], ["stray_positional"], ["--json=1"],
           ["--out"], ["--", "x"]]
NEEDS_VALUE = (["--eps"], ["--out"])  # appended last: in the middle they would swallow the next word


def mangle(rnd: random.Random, argv: list[str], required: list[str], clean: bool) -> tuple[list[str], str]:
    """Now and then: an unknown flag, a flag without value, a stray word, or a required argument dropped."""
    roll = 99 if clean else rnd.randint(0, 99)
    if roll < 8:
        extra = rnd.choice(UNKNOWN)
        at = len(argv) if extra in NEEDS_VALUE else rnd.randint(1, len(argv))
        return argv[:at] + extra + argv[at:], f"unknown:{' '.join(extra)}"
    if roll < 13 and required:
        flag = rnd.choice(required)
        if flag in argv:
            i = argv.index(flag)
            return argv[:i] + argv[i + 2:], f"dropped:{flag}"
        if flag == "POSITIONAL" and len(argv) > 1:
            return argv[:1] + argv[2:], "dropped:positional"
    return argv, ""


SEARCH_VALID = {"--eps": ["0.05", "0.1", "0.3", "0.5", "0.9"], "--seed": ["0", "1", "7"],
                "--generations": ["0", "1", "2", "3"], "--population": ["2", "3", "4", "6"],
                "--stall": ["1", "2", "3", "12"], "--restarts": ["0", "1", "2"], "--time-limit": ["30", "0.5", "1e9"],
                "--workers": ["0"]}
SEARCH_ODD = {"--eps": ODD_FLOATS + ["0.9999999999", "1e-300"], "--time-limit": ODD_FLOATS,
              "--seed": ODD_INTS, "--generations": ODD_INTS, "--population": ODD_INTS + ["1"],
              "--stall": ODD_INTS, "--restarts": ODD_INTS,
              "--workers": [v for v in ODD_INTS if not v.lstrip("+").isdigit()] + ["-1", "-9"]}
PARETO_VALID = ["0.05:0.3:2", "0.1:0.5:3", "0.05:0.2"]
PARETO_ODD = ["0.3:0.05", "0:0.1", "0.1:1", "a:b", "0.1", "0.1:0.2:1", "0.1:0.2:99", "nan:0.2", "", "0.1:0.2:3:4",
              "1e-300:0.1", "0.1:0.1", "-0.1:0.2", "0.1:0.2:2.5"]
# values the search must refuse before doing any work
REFUSED = {"--eps": ["0", "1", "-0.1", "1.5", "nan", "inf", "-inf", "1e308"], "--population": ["1", "0", "-1"],
           "--workers": ["-1", "-9"], "--time-limit": ["0", "-1", "-inf"], "--generations": ["-1", "-7"],
           "--restarts": ["-1", "-7"]}


def _out_spec(rnd: random.Random, files: list[FileSpec], kind_list: list[str], default_name: str,
              existing: tuple[str, str] | None = None, clean: bool = False) -> tuple[str | None, str, list[str]]:
    """(--out value or None, label, extra flags) for an output that is a directory or a file."""
    kind = pick(rnd, kind_list, clean)
    extra: list[str] = []
    if kind == "fresh":
        return default_name, kind, extra
    if kind == "nested":
        return f"a/b/{default_name}", kind, extra
    if kind == "default":
        return None, kind, extra
    if kind == "existing_file":
        files.append(FileSpec("afile", "plain", {"content": "mine"}))
        return "afile", kind, extra
    if kind == "under_file":
        files.append(FileSpec("afile", "plain", {"content": "mine"}))
        return f"afile/{default_name}", kind, extra
    if kind == "empty_dir":
        files.append(FileSpec(default_name, "directory"))
        return default_name, kind, extra
    if kind == "readonly_dir":
        files.append(FileSpec("ro", "directory", {"mode": 0o500}))
        return f"ro/{default_name}", kind, extra
    if kind == "proc":
        files.append(FileSpec("proc", "symlink", {"target": "/proc"}))
        return f"proc/{default_name}", kind, extra
    if kind == "devfull":
        files.append(FileSpec(default_name, "symlink", {"target": "/dev/full"}))
        return default_name, kind, ["--overwrite"]
    if kind in ("existing", "existing_overwrite") and existing is not None:
        files.append(FileSpec(default_name, existing[0], {"name": existing[1]} if existing[0] == "copy_asset"
                              else {"content": "mine"}))
        return default_name, kind, ["--overwrite"] if kind == "existing_overwrite" else []
    if kind == "dir_named_like_file":
        files.append(FileSpec(default_name, "directory"))
        return default_name, kind, ["--overwrite"] if rnd.random() < 0.5 else []
    return default_name, kind, extra


SEARCH_OUTS = ["fresh"] * 8 + ["nested", "default", "existing_file", "under_file", "empty_dir", "readonly_dir",
                                "proc", "existing", "existing_overwrite"]


def search_case(rnd: random.Random, command: str) -> Case:
    files: list[FileSpec] = []
    clean = rnd.random() < CLEAN  # a valid case, to reach the deeper checks
    argv = [command]
    labels = []
    asset_run = "image_run" if command == "image" else "tensor_run"
    resume = rnd.randint(0, 99) < (25 if command == "image" else 12)
    expensive = False
    if resume:
        kind = pick(rnd, CKPT_KINDS, clean)
        labels.append(f"resume:{kind}")
        files.append(FileSpec("ckpt", "checkpoint_dir", {"kind": kind, "source": asset_run}))
        src = "gray.png" if command == "image" else "arr.npy"
        which = pick(rnd, ["same"] * 4 + ["other", "none"] if command == "image" else ["same"] * 4 + ["other"],
                     clean)
        if which == "same":
            files.append(FileSpec(src, "copy_asset", {"name": src}))
            argv.append(src)
        elif which == "other":
            name = "o.png" if command == "image" else "o.npy"
            files.append(FileSpec(name, "image" if command == "image" else "npy", {"kind": "L" if command == "image"
                                                                                   else "good"}))
            argv.append(name)
        else:
            expensive = True  # the bundled astronaut: refused, by its fingerprint, before any work
        labels.append(f"input:{which}")
        argv += ["--resume", "ckpt"]
        if rnd.randint(0, 9) == 0:
            argv += ["--out", pick(rnd, ["ckpt", "elsewhere"], False) if not clean else "ckpt"]
        valid = {**SEARCH_VALID, "--population": ["4"], "--eps": ["0.1"], "--seed": ["0"], "--stall": ["12"],
                 "--generations": ["2", "3"]}
    else:
        if command == "image":
            kind, suffix = pick(rnd, IMAGE_KINDS + [("<default>", "")] * 2, clean)
            if kind == "<default>":
                expensive = True
            else:
                name = "in" + suffix
                files.append(FileSpec(name, "image", {"kind": kind, "h": rnd.choice([24, 16, 7, 33]),
                                                      "w": rnd.choice([30, 20, 5, 11])}))
                argv.append(name)
        else:
            fmt = pick(rnd, [".npy"] * 3 + [".safetensors"] * 2 + [".txt", ".NPY", ""], clean)
            if fmt == ".safetensors":
                kind = pick(rnd, ST_KINDS, clean)
                shape = rnd.choice(NPY_GOOD_SHAPES)
                files.append(FileSpec("in.safetensors", "safetensors", {"kind": kind, "shape": shape}))
                argv.append("in.safetensors")
                key = pick(rnd, [None, None, "w", "b", "zz", ""], False) if not clean else "w"
                if key is not None:
                    argv += [f"--key={key}"]
                    kind += f"+key={key}"
            elif fmt in (".npy", ".NPY"):
                kind = pick(rnd, NPY_KINDS, clean)
                shape = rnd.choice(NPY_GOOD_SHAPES)
                files.append(FileSpec("in" + fmt, "npy", {"kind": kind, "shape": shape}))
                argv.append("in" + fmt)
                if rnd.randint(0, 9) == 0 and not clean:
                    argv.append("--key=w")
            else:
                kind = "wrong_suffix" if fmt else "missing"
                if fmt:
                    files.append(FileSpec("in" + fmt, "npy", {"kind": "good"}))
                argv.append("in" + fmt if fmt else "nothing_here.npy")
        labels.append(f"input:{kind}")
        out, out_kind, extra = _out_spec(rnd, files, SEARCH_OUTS, "run", ("copy_asset", asset_run), clean)
        labels.append(f"out:{out_kind}")
        if out is not None:
            argv += ["--out", out]
        argv += extra
        valid = SEARCH_VALID
    values = {flag: numeric(rnd, valid[flag], SEARCH_ODD[flag], clean) for flag in SEARCH_VALID}
    values["--workers"] = values["--workers"] or "0"  # never a Ray cluster
    values["--generations"] = values["--generations"] or "2"  # not the default 60
    values["--population"] = values["--population"] or "4"  # not the default 32
    if _huge(values["--generations"]):  # a huge count runs until the time limit
        values["--time-limit"], values["--stall"] = "0.5", "2"
    if _huge(values["--population"]) or expensive:
        if not any(values[f] in REFUSED[f] for f in REFUSED):
            values["--eps"] = rnd.choice(REFUSED["--eps"])
            labels.append("forced-refusal")
    if "--resume" not in argv and rnd.randint(0, 5) == 0:  # the front instead of one ε
        spec = rnd.choice(PARETO_VALID if clean or rnd.randint(0, 1) else PARETO_ODD)
        _add(argv, "--pareto", spec)
        labels.append(f"--pareto={spec}")
        if clean or rnd.randint(0, 2):
            values.pop("--eps")
    for flag, value in values.items():
        _add(argv, flag, value)
        if _is_odd(value, valid[flag]):
            labels.append(f"{flag}={value}")
    for flag in ("--no-carry-over", "--overwrite", "--json"):
        if rnd.randint(0, 9) < (5 if flag == "--json" else 1):
            argv.append(flag)
    argv, how = mangle(rnd, argv, ["POSITIONAL"] if command == "tensor" else [], clean)
    return Case(command, argv, files, " ".join(["clean"] * clean + labels + [how]).strip())


def reconstruct_case(rnd: random.Random) -> Case:
    files: list[FileSpec] = []
    clean = rnd.random() < CLEAN  # a valid case, to reach the deeper checks
    source = rnd.choice(["image_run", "tensor_run"])
    kind = pick(rnd, TT_KINDS, clean)
    files.append(FileSpec("run", "tt_run", {"kind": kind, "source": source}))
    target = "run/tt.safetensors" if kind == "direct_file" or rnd.randint(0, 9) == 0 else "run"
    argv = ["reconstruct", target]
    suffix = pick(rnd, [".npy", ".safetensors"] * 3 + [".png"] * 2 + [".bmp", "", ".PNG"], clean)
    if suffix == ".png" and source == "tensor_run" and clean:
        suffix = ".npy"
    out_kind = pick(rnd, ["fresh"] * 8 + ["existing", "existing_overwrite", "dir_named_like_file",
                                          "under_file", "missing_parent", "devfull", "proc"], clean)
    name = "o" + suffix
    if out_kind == "missing_parent":
        out, extra = f"nope/{name}", []
    else:
        out, out_kind, extra = _out_spec(rnd, files, [out_kind], name, ("plain", ""))
    if out is not None:
        argv += ["--out", out]
    argv += extra
    for flag in ("--overwrite", "--json"):
        if flag not in argv and rnd.randint(0, 9) < (5 if flag == "--json" else 1):
            argv.append(flag)
    argv, how = mangle(rnd, argv, ["--out", "POSITIONAL"], clean)
    return Case("reconstruct", argv, files,
                f"{'clean ' * clean}tt:{kind} from:{source} out:{out_kind}{suffix} {how}".strip())


LAYERS_VALID = {"--eps": ["0.3", "0.5", "0.9"], "--budget": ["0.5", "0.9", "3000", "1e9"],
                "--generations": ["0", "1", "2", "3"], "--population": ["2", "4", "6"], "--seed": ["0", "3"],
                "--workers": ["0"]}
LAYERS_ODD = {"--eps": ODD_FLOATS, "--budget": ODD_FLOATS + ["1e-300", "0.999999"], "--generations": ODD_INTS,
              "--population": ODD_INTS + ["1"], "--seed": ODD_INTS,
              "--workers": [v for v in ODD_INTS if not v.lstrip("+").isdigit()] + ["-1"]}
LAYER_FILTERS = {"llama": ["layers.0.self_attn.q", "layers.1.mlp.down", "self_attn.v", "0.self_attn"],
                 "bert": ["layer.0.attention.self.query", "output.dense", "layer.1."],
                 "flat": ["layers.0.mlp", "q_proj"]}


def _model_files(rnd: random.Random, files: list[FileSpec], clean: bool, good: tuple[str, ...]) -> tuple[str, str]:
    kind = pick(rnd, MODEL_KINDS, False) if not clean else rnd.choice(good)
    arg = _model_arg(kind)
    files.append(FileSpec(arg if arg not in ("minilm", "smollm2") else "unused", "model_dir", {"kind": kind}))
    return kind, arg


def layers_case(rnd: random.Random) -> Case:
    files: list[FileSpec] = []
    clean = rnd.random() < CLEAN  # a valid case, to reach the deeper checks
    kind, model = _model_files(rnd, files, clean, ("llama", "llama", "bert", "flat"))
    argv = ["layers", "--model", model]
    labels = [f"model:{kind}"]
    values = {flag: numeric(rnd, LAYERS_VALID[flag], LAYERS_ODD[flag], clean) for flag in LAYERS_VALID}
    values["--workers"] = values["--workers"] or "0"
    values["--generations"] = values["--generations"] or "2"
    values["--population"] = values["--population"] or "4"
    grids = [None] * 6 + [["0.3", "0.6"], ["0.5"], ["0"], ["1"], ["nan"], ["-0.2", "0.5"], ["0.3", "abc"], [],
                          ["inf"], ["0.2", "0.2"]]
    grid = rnd.choice(grids[:8] if clean else grids)
    refused = (values["--budget"] in ("0", "-0", "-1", "-0.1", "nan", "-nan", "-inf")
               or values["--population"] in ("1", "0", "-1", "-7") or values["--workers"] in ("-1", "-7"))
    # the real models' layers take seconds to minutes to search: only with a value refused before any search
    if (_huge(values["--generations"]) or _huge(values["--population"]) or kind in ("smollm2", "minilm")) \
            and not refused:
        values["--budget"] = "-1"
        labels.append("forced-refusal")
    if kind in ("llama", "bert", "flat") and rnd.randint(0, 9) < 7:  # a few layers: cheap
        argv += ["--layers", rnd.choice(LAYER_FILTERS[kind] + ["no_such_layer", ""] * (not clean))]
    elif values["--budget"] is not None and grid is None:  # every layer at every ε of the default grid: slow
        grid = ["0.3", "0.6"]
    for flag, value in values.items():
        _add(argv, flag, value)
        if _is_odd(value, LAYERS_VALID[flag]):
            labels.append(f"{flag}={value}")
    if grid is not None:
        argv += ["--eps-grid", *grid]
        labels.append(f"grid={grid}")
    fmt = rnd.choice([None, None, "ttm", "tt"] + ["xyz", "TTM"] * (not clean))
    if fmt is not None:
        argv += ["--format", fmt]
    if rnd.randint(0, 3) == 0:  # activation-aware: calibration windows of the model's tokenizer
        calib = pick(rnd, TEXT_KINDS, clean)
        if calib != "missing":
            files.append(FileSpec("calib.txt", "text_file", {"kind": calib}))
        argv += ["--activations", "--calib", "calib.txt", "--samples", pick(rnd, ["2", "3", "0", "-1"], clean),
                 "--seqlen", pick(rnd, ["16", "32", "1", "abc"], clean)]
        labels.append(f"activations calib:{calib}")
        if rnd.randint(0, 2) == 0:
            argv.append("--sensitivity")
            labels.append("sensitivity")
    out, out_kind, extra = _out_spec(rnd, files, ["fresh"] * 6 + ["nested", "existing", "existing_overwrite",
                                                                   "under_file", "dir_named_like_file", "proc",
                                                                   "devfull", "txt"], "plan.json", ("plain", ""),
                                     clean)
    if out_kind == "txt":
        out = "plan.txt"
    argv += ["--out", out, *extra]
    labels.append(f"out:{out_kind}")
    for flag in ("--overwrite", "--json"):
        if flag not in argv and rnd.randint(0, 9) < (5 if flag == "--json" else 1):
            argv.append(flag)
    argv, how = mangle(rnd, argv, ["--model", "--out"], clean)
    return Case("layers", argv, files, " ".join(["clean"] * clean + labels + [how]).strip())


COMPRESS_VALID = {"--ratio": ["0.1", "0.2", "0.5"], "--density": ["0.1", "0.25"], "--finetune-steps": ["0", "1", "2"],
                  "--lr": ["1e-4", "0.01"], "--samples": ["1", "2", "3"], "--seqlen": ["8", "32", "64"],
                  "--seed": ["0", "5"], "--warmup": ["0", "0.1"], "--alternations": ["0", "1", "2"]}
COMPRESS_ODD = {"--alternations": ODD_INTS + ["11"],
                "--warmup": ODD_FLOATS + ["1", "0.999"], "--ratio": ODD_FLOATS + ["0.999", "1e-300"],
                "--density": ODD_FLOATS + ["1e-300", "0.999"],
                "--finetune-steps": ODD_INTS, "--lr": ODD_FLOATS, "--samples": ODD_INTS,
                "--seqlen": ODD_INTS + ["1", "2"],
                "--seed": ODD_INTS}


def compress_case(rnd: random.Random) -> Case:
    files: list[FileSpec] = []
    clean = rnd.random() < CLEAN  # a valid case, to reach the deeper checks
    compressor = pick(rnd, ["flat-llm"] * 8 + ["tt"] * 6 + ["saten"] * 6 + ["FLAT", "svd"], clean)
    kind, model = _model_files(rnd, files, clean, ("llama",))
    argv = ["compress", compressor, "--model", model]
    labels = [compressor, f"model:{kind}"]
    values = {flag: numeric(rnd, COMPRESS_VALID[flag], COMPRESS_ODD[flag], clean) for flag in COMPRESS_VALID}
    values["--samples"] = values["--samples"] or "2"
    values["--seqlen"] = values["--seqlen"] or "32"
    if compressor != "saten":  # --density / --nm / --alternations are saten's
        values["--density"] = values["--density"] if rnd.randint(0, 9) == 0 and not clean else None
        values["--alternations"] = values["--alternations"] if rnd.randint(0, 9) == 0 and not clean else None
    if compressor == "flat-llm":
        values["--finetune-steps"] = values["--finetune-steps"] if rnd.randint(0, 9) == 0 and not clean else None
        method = rnd.choice([None, None, None, "flat-llm", "svd", "svd-llm"] + ["zz"] * (not clean))
        if method:
            argv += ["--method", method]
        if rnd.randint(0, 4) == 0:
            argv.append("--uniform")
    else:
        plan_kind = pick(rnd, PLAN_KINDS + ["none"], clean)
        if plan_kind != "none":
            files.append(FileSpec("plan.json", "plan_file", {"kind": plan_kind}))
            argv += ["--plan", "plan.json"]
        labels.append(f"plan:{plan_kind}")
        if compressor == "saten" and values["--density"] is None and (clean or rnd.randint(0, 9) < 8) \
                or rnd.randint(0, 19) == 0 and not clean:
            nm = pick(rnd, ["2:4"] * 6 + ["1:2", "0:4", "4:2", "2:0", "a:b", "2:4:8", "-2:4", "1:1", "",
                                          "99999999999:100000000000"], clean)
            argv.append(f"--nm={nm}")
            labels.append(f"nm={nm}")
        if rnd.randint(0, 4) == 0:
            argv.append("--distill")
    if rnd.randint(0, 9) == 0 and not clean:
        argv += ["--plan", "plan.json"] if "--plan" not in argv else []
    refused_now = values["--samples"] in ("0", "-1", "-7") or values["--seqlen"] in ("0", "-1", "-7", "1")
    if _huge(values["--samples"]) and not refused_now:  # only with windows the text cannot fill
        values["--seqlen"] = HUGE_INT
    if _huge(values["--finetune-steps"]):
        values["--lr"] = "-1"
    for flag, value in values.items():
        _add(argv, flag, value)
        if _is_odd(value, COMPRESS_VALID[flag]):
            labels.append(f"{flag}={value}")
    calib = pick(rnd, TEXT_KINDS, clean)
    if calib != "missing":
        files.append(FileSpec("calib.txt", "text_file", {"kind": calib}))
    argv += ["--calib", "calib.txt"]  # always a file: gensim's Wikipedia takes seconds to read
    labels.append(f"calib:{calib}")
    out, out_kind, extra = _out_spec(rnd, files, ["fresh"] * 6 + ["nested", "existing", "existing_overwrite",
                                                                   "existing_file", "under_file", "empty_dir",
                                                                   "proc", "readonly_dir"], "outdir",
                                     ("copy_asset", "flat"), clean)
    if kind == "smollm2":  # the real model loads only if an existing file as --out is not refused first
        files.append(FileSpec("afile", "plain", {"content": "mine"}))
        out, out_kind, extra = "afile", "existing_file+forced-refusal", []
    argv += ["--out", out, *extra]
    labels.append(f"out:{out_kind}")
    for flag in ("--overwrite", "--json"):
        if flag not in argv and rnd.randint(0, 9) < (5 if flag == "--json" else 1):
            argv.append(flag)
    argv, how = mangle(rnd, argv, ["--model", "--out", "POSITIONAL"], clean)
    return Case("compress", argv, files, " ".join(["clean"] * clean + labels + [how]).strip())


EVAL_VALID = {"--window": ["2", "8", "16", "64"], "--max-windows": ["1", "2", "3"]}
EVAL_ODD = {"--window": ODD_INTS + ["1", "4096", "100000"], "--max-windows": ODD_INTS}


def eval_case(rnd: random.Random) -> Case:
    files: list[FileSpec] = []
    clean = rnd.random() < CLEAN  # a valid case, to reach the deeper checks
    kind, model = _model_files(rnd, files, clean, ("llama", "flat"))
    argv = ["eval", "--model", model]
    labels = [f"model:{kind}"]
    values = {flag: numeric(rnd, EVAL_VALID[flag], EVAL_ODD[flag], clean) for flag in EVAL_VALID}
    values["--window"] = values["--window"] or "16"
    if values["--max-windows"] in (None, HUGE_INT) and values["--window"] in ("2", "8"):
        values["--window"] = "64"  # every window of the text: a few hundred forward passes at most
    text = pick(rnd, TEXT_KINDS, clean)
    if text != "missing":
        files.append(FileSpec("eval.txt", "text_file", {"kind": text}))
    argv += ["--text", "eval.txt"]  # always a file: gensim's Wikipedia takes seconds to read
    labels.append(f"text:{text}")
    if kind == "smollm2" and values["--window"] not in ("0", "1", "-1", "-7"):
        values["--window"] = "1"
        labels.append("forced-refusal")
    for flag, value in values.items():
        _add(argv, flag, value)
        if _is_odd(value, EVAL_VALID[flag]):
            labels.append(f"{flag}={value}")
    if rnd.randint(0, 9) < 6:
        argv.append("--no-speed")
    if rnd.random() < 0.5:
        argv.append("--json")
    argv, how = mangle(rnd, argv, ["--model"], clean)
    return Case("eval", argv, files, " ".join(["clean"] * clean + labels + [how]).strip())


def pareto_case(rnd: random.Random) -> Case:
    """``pareto --model``: mostly refusals; a valid case runs two cheap methods on a tiny Llama in process."""
    files: list[FileSpec] = []
    clean = rnd.random() < CLEAN
    kind, model = _model_files(rnd, files, clean, ("llama",))
    budgets = pick(rnd, ["0.8", "0.8,0.6", "0.7"] * 3 + ["", "1.5", "0", "a,b", "0.8,,0.6", "nan", "-0.2", "1e-300"],
                   clean)
    methods = pick(rnd, ["flat-llm", "svd-llm", "flat-llm,svd-llm"] * 3 + ["zip", "", "tt,zip", "FLAT-LLM"], clean)
    argv = ["pareto", "--model", model, "--budgets", budgets, "--methods", methods, "--workers", "0",
            "--windows", pick(rnd, ["1"] * 4 + ["0", "-1", "abc", HUGE_INT], clean),
            "--samples", pick(rnd, ["2", "3"] * 3 + ["0", "-1", "abc"], clean),
            "--seqlen", pick(rnd, ["32"] * 4 + ["1", "0", "abc"], clean)]
    labels = [f"model:{kind}", f"budgets={budgets}", f"methods={methods}"]
    if kind == "smollm2" and not any(v in ("0", "-1", "abc", "", "1.5", "nan", "a,b", "zip") for v in argv):
        argv[argv.index("--windows") + 1] = "0"  # the real model loads only if nothing refuses first
        labels.append("forced-refusal")
    for flag, name in (("--calib", "calib.txt"), ("--text", "eval.txt")):
        kind_text = pick(rnd, TEXT_KINDS, clean)
        if kind_text != "missing":
            files.append(FileSpec(name, "text_file", {"kind": kind_text}))
        argv += [flag, name]
        labels.append(f"{flag[2:]}:{kind_text}")
    out, out_kind, extra = _out_spec(rnd, files, ["fresh"] * 6 + ["nested", "existing", "existing_overwrite",
                                                                   "existing_file", "under_file", "empty_dir",
                                                                   "proc", "readonly_dir"], "front",
                                     ("copy_asset", "flat"), clean)
    argv += ["--out", out, *extra]
    labels.append(f"out:{out_kind}")
    if rnd.random() < 0.5:
        argv.append("--json")
    argv, how = mangle(rnd, argv, ["--model", "--out", "--budgets"], clean)
    return Case("pareto", argv, files, " ".join(["clean"] * clean + labels + [how]).strip())


def _cases(build, *args) -> st.SearchStrategy[Case]:
    """Cases built by ``build(rnd, *args)`` from a generator hypothesis seeds (uniform choices:
    hypothesis' own draws lean towards the first and the boundary values)."""
    return st.randoms(use_true_random=True).map(lambda rnd: build(rnd, *args))


STRATEGIES = {"image": _cases(search_case, "image"), "tensor": _cases(search_case, "tensor"),
              "reconstruct": _cases(reconstruct_case), "layers": _cases(layers_case),
              "compress": _cases(compress_case), "eval": _cases(eval_case), "pareto": _cases(pareto_case)}


# --------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("cli_fuzz"))
    yield r
    r.close()


CASES_RUN: dict[str, int] = {}


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_contract(command, runner):
    seen: list[str] = []

    @settings(max_examples=SHARE[command], deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: a failing case is shown as drawn
              suppress_health_check=list(HealthCheck))
    @given(case=STRATEGIES[command])
    def check_case(case: Case) -> None:
        seen.append(case.label)
        problems = runner.run(case)
        assert not problems, (f"fuzz {command}: case {len(seen)} (of up to {SHARE[command]}) broke the contract\n"
                              f"{case!r}\n" + "\n".join(problems))

    check_case()
    CASES_RUN[command] = len(seen)  # printed in pytest's summary (conftest.py)
    print(f"\nfuzz {command}: {len(seen)} cases")
    assert len(seen) >= SHARE[command], f"fuzz {command}: only {len(seen)} cases ran"


def collect_violations(commands=COMMANDS, examples: int = 300, seed: int = 0, root: Path | None = None,
                       runner: Runner | None = None) -> dict:
    """Run each command's strategy for ``examples`` cases without stopping at a failure;
    {command: [(case repr, problems)]} (for triage, e.g. from a throwaway script)."""
    own = runner is None
    runner = runner or Runner(root or Path(tempfile.mkdtemp(prefix="cli_fuzz")))
    found: dict[str, list] = {c: [] for c in commands}
    try:
        for command in commands:
            _record_all(command, examples, seed, runner, found[command])
    finally:
        if own:
            runner.close()
    return found



def _record_all(command: str, examples: int, seed: int, runner: Runner, found: list) -> None:
    from hypothesis import seed as hseed

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=STRATEGIES[command])
    def record(case: Case) -> None:
        problems = runner.run(case)
        if problems:
            found.append((repr(case), problems))

    record()

"""Pareto mode: TT-SVD over a grid of ε, the island search of the front, and its command line."""

import json

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shapesearch.engine.executors import LocalExecutor
from shapesearch.engine.fitness import confirm
from shapesearch.engine.pareto import eps_grid, parse_pareto, run_pareto
from shapesearch.engine.search import SearchConfig, run_search
from shapesearch.engine.tt_svd import relative_error, tt_svd, tt_svd_grid
from shapesearch.errors import ArgumentError
from shapesearch.jobs import artifacts
from shapesearch.jobs.images import load_image

from .conftest import smooth_image
from .test_cli import _run

GRID = (0.03, 0.08, 0.2)
CFG = dict(population=12, generations=6, stall=100, seed=3, polish_rounds=2)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["gram", "svd"]), st.booleans(), st.booleans())
def test_a_grid_is_each_of_its_single_svds(seed, method, reverse, carry_over):
    rng = np.random.default_rng(seed)
    dims = tuple(int(n) for n in rng.integers(2, 7, size=rng.integers(2, 5)))
    tensor = rng.standard_normal(dims).cumsum(axis=0)
    grid = (0.01, 0.1, 0.4)
    for eps, tt in zip(grid, tt_svd_grid(tensor, grid, method=method, reverse=reverse, carry_over=carry_over)):
        one = tt_svd(tensor, eps, method=method, reverse=reverse, carry_over=carry_over)
        assert tt.ranks == one.ranks and tt.params == one.params
        assert tt.rel_error == pytest.approx(one.rel_error, rel=1e-9, abs=1e-12)
        assert relative_error(tensor, np.asarray(tt.to_tensor())) <= eps * (1 + 1e-6)


def test_grid_specs():
    assert eps_grid(0.02, 0.3, 2) == (0.02, 0.3)
    grid = parse_pareto("0.01:0.1:3")
    assert grid == (0.01, 0.03162, 0.1)
    assert len(parse_pareto("0.02:0.3")) == 6
    for bad in ("0.3:0.02", "0:0.1", "0.1:1", "0.1", "a:b", "0.1:0.2:1", "0.1:0.2:100", "0.1:0.2:3:4", "nan:0.2"):
        with pytest.raises(ArgumentError):
            parse_pareto(bad)


@pytest.fixture(scope="module")
def front():
    img = smooth_image(24, 32, 3, seed=7)
    return img, run_pareto(img, SearchConfig(**CFG), GRID, LocalExecutor(img, float(np.linalg.norm(img))))


def test_every_point_is_verified_and_the_front_is_marked(front):
    img, result = front
    norm = float(np.linalg.norm(img))
    assert [p.eps for p in result.points] == list(GRID)
    for p in result.points:
        again = confirm(img, norm, (p.shape.key, {"eps": p.eps, "carry_over": True, "method": "svd",
                                                  "dtype": "float64"}))
        assert again["params"] == p.params and tuple(again["ranks"]) == p.ranks
        assert p.rel_error == pytest.approx(again["rel_error"]) and p.rel_error <= p.eps
        approx = p.shape.invert(np.asarray(tl.tt_to_tensor(p.cores)))
        assert relative_error(img, approx) <= p.eps
        assert p.cr == pytest.approx(img.size / p.params)
        beaten = any(q.cr >= p.cr and q.rel_error <= p.rel_error and (q.cr > p.cr or q.rel_error < p.rel_error)
                     for q in result.points)
        assert p.front == (not beaten)
    # a looser bound never needs more parameters than a tighter one's best shape did
    params = [p.params for p in result.points]
    assert params == sorted(params, reverse=True)


def test_same_seed_same_front(front):
    img, result = front
    again = run_pareto(img, SearchConfig(**CFG), GRID, LocalExecutor(img, float(np.linalg.norm(img))))
    assert [(p.shape.key, p.params) for p in again.points] == [(p.shape.key, p.params) for p in result.points]
    assert again.evaluations == result.evaluations


def test_each_island_without_migration_is_the_single_search(front):
    img, result = front
    for p in result.points:
        single = run_search(img, SearchConfig(**CFG, eps=p.eps), LocalExecutor(img, float(np.linalg.norm(img))))
        assert (single.shape.key, single.params, single.rel_error) == (p.shape.key, p.params, p.rel_error)


def test_migration_is_deterministic_and_keeps_every_bound():
    img = smooth_image(20, 24, 3, seed=11)
    runs = [run_pareto(img, SearchConfig(**CFG), GRID, LocalExecutor(img, float(np.linalg.norm(img))),
                       migrate_every=1) for _ in range(2)]
    assert [(p.shape.key, p.params) for p in runs[0].points] == [(p.shape.key, p.params) for p in runs[1].points]
    assert all(p.rel_error <= p.eps for p in runs[0].points)
    alone = run_pareto(img, SearchConfig(**CFG), GRID, LocalExecutor(img, float(np.linalg.norm(img))))
    assert (alone.evaluations, alone.cache_hits) != (runs[0].evaluations, runs[0].cache_hits)  # migrants came


def test_the_caller_s_config_is_left_alone(front):
    img, _ = front
    config = SearchConfig(**CFG)
    run_pareto(img, config, (0.1, 0.2), LocalExecutor(img, float(np.linalg.norm(img))))
    assert config.eps == SearchConfig().eps


def _error(args, capsys):
    code, out, err = _run(args, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("shapesearch: error:"), err
    return lines[0]


def test_pareto_from_the_command_line(tmp_path, capsys):
    src = tmp_path / "img.png"
    Image.fromarray((smooth_image(30, 40, 3, seed=2) * 255).round().astype(np.uint8)).save(src)
    out = tmp_path / "front"
    args = ["image", src, "--pareto", "0.03:0.2:3", "--generations", 3, "--population", 8, "--out", out]
    code, stdout, _ = _run([*args, "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result == json.loads((out / artifacts.PARETO_FILE).read_text()) | {"out": str(out)}
    assert [p["eps"] for p in result["points"]] == [0.03, 0.07746, 0.2]
    assert (out / artifacts.PARETO_PLOT).stat().st_size > 0
    data = load_image(src).pixels
    for p in result["points"]:
        assert (out / p["file"]).is_file() and p["rel_error"] <= p["eps"]
    # --eps picks the most compressed point whose bound meets it
    rebuilt = tmp_path / "r.png"
    assert _run(["reconstruct", out, "--eps", 0.1, "--out", rebuilt, "--json"], capsys)[0] == 0
    meta = artifacts.load_tt(out / "tt-eps0.07746.safetensors")[2]
    assert meta["eps"] == 0.07746
    assert relative_error(data, load_image(rebuilt).pixels) <= 0.07746 + 0.01  # + 8-bit rounding
    # one line, exit 2, nothing written
    assert "drop --eps" in _error([*args[:-2], "--eps", 0.1, "--out", tmp_path / "x"], capsys)
    assert "--pareto must be LOW:HIGH" in _error([*args[:3], "0.1", "--out", tmp_path / "x"], capsys)
    assert "cannot be resumed" in _error(["image", "--resume", out, "--pareto", "0.1:0.2"], capsys)
    assert "--eps is needed" in _error(["reconstruct", out, "--out", tmp_path / "y.png"], capsys)
    assert "below every point" in _error(["reconstruct", out, "--eps", 0.01, "--out", tmp_path / "y.png"], capsys)
    assert "not a relative error" in _error(["reconstruct", out, "--eps", "nan", "--out", tmp_path / "y.png"], capsys)
    assert "not a relative error" in _error(["reconstruct", out, "--eps", 5, "--out", tmp_path / "y.png"], capsys)
    assert "holds a --pareto run, which cannot be resumed" in _error(["image", "--resume", out], capsys)
    assert "or overwrite it" in _error(args, capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y.png").exists()
    single = tmp_path / "single"
    assert _run(["image", src, "--generations", 1, "--population", 4, "--out", single], capsys)[0] == 0
    assert "not one" in _error(["reconstruct", single, "--eps", 0.1, "--out", tmp_path / "y.png"], capsys)
    # --overwrite with a new grid leaves no point of the old one behind
    args[3] = "0.05:0.1:2"
    assert _run([*args, "--overwrite"], capsys)[0] == 0
    assert sorted(f.name for f in out.glob("tt-eps*")) == ["tt-eps0.05.safetensors", "tt-eps0.1.safetensors"]

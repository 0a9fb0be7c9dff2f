import numpy as np
import pytest

from shapesearch.engine.executors import LocalExecutor
from shapesearch.engine.search import SearchConfig, run_search
from shapesearch.errors import ShapesearchError


def _search(image, tmp_path=None, resume=False, **kw):
    cfg = SearchConfig(**{"eps": 0.1, "population": 12, "generations": 6, "stall": 100, **kw})
    ex = LocalExecutor(image, float(np.linalg.norm(image)))
    return run_search(image, cfg, ex, checkpoint_dir=tmp_path, resume=resume)


def _summary(r):
    return (r.shape.key, r.params, r.ranks, r.evaluations, r.cache_hits,
            [(h["best_params"], h["evaluations"]) for h in r.history])


def test_result_meets_bound_and_beats_its_seeds(image):
    r = _search(image)
    assert r.rel_error <= 0.1
    assert r.cr == pytest.approx(image.size / r.params)
    # the reference shapes and the surrogate's shapes all start in the population
    assert r.params <= min(v["params"] for v in r.reference.values())
    assert r.params <= min(s["bound_params"] for s in r.surrogate)
    assert r.evaluations > 0 and r.cache_hits > 0
    assert r.history[-1]["best_params"] <= r.history[0]["best_params"]


def test_same_seed_same_result_other_seed_other_path(image):
    a, b = _search(image, seed=3), _search(image, seed=3)
    assert _summary(a) == _summary(b)
    c = _search(image, seed=4)
    assert _summary(c)[3:] != _summary(a)[3:]


def test_resume_equals_uninterrupted_run(image, tmp_path):
    full = _search(image, seed=7, generations=6)
    _search(image, tmp_path / "run", seed=7, generations=3)
    resumed = _search(image, tmp_path / "run", resume=True, seed=7, generations=6)
    assert _summary(resumed) == _summary(full)


def test_resume_after_a_crash_between_cache_append_and_state_write(image, tmp_path):
    full = _search(image, seed=7, generations=5)
    _search(image, tmp_path / "run", seed=7, generations=2)
    log = tmp_path / "run" / "checkpoint-cache.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines + lines[:3]) + "\n")  # entries the state does not know yet
    resumed = _search(image, tmp_path / "run", resume=True, seed=7, generations=5)
    assert _summary(resumed) == _summary(full)


def test_resume_refuses_other_data_or_settings(image, tmp_path):
    _search(image, tmp_path / "run", generations=1)
    with pytest.raises(ShapesearchError, match="different data"):
        _search(image * 0.5, tmp_path / "run", resume=True)
    with pytest.raises(ShapesearchError, match=r"eps=0.1 \(now 0.2\)"):
        _search(image, tmp_path / "run", resume=True, eps=0.2)
    # settings that decide what a cached score means may not change either
    with pytest.raises(ShapesearchError, match=r"population=12 \(now 8\)"):
        _search(image, tmp_path / "run", resume=True, population=8)
    with pytest.raises(ShapesearchError, match=r"carry_over=True \(now False\)"):
        _search(image, tmp_path / "run", resume=True, carry_over=False)
    with pytest.raises(ShapesearchError, match="not found"):
        _search(image, tmp_path / "nothing", resume=True)


def test_time_limit_stops_early(image):
    r = _search(image, generations=10_000, time_limit=2.0)
    assert len(r.history) - 1 < 10_000
    assert r.history[-1]["elapsed"] < 6.0


def test_stall_stops_early(image):
    r = _search(image, generations=10_000, stall=2)
    ga = [h for h in r.history if h["phase"] == "ga"]
    assert len(ga) - 1 < 10_000
    last = [h["best_params"] for h in ga[-3:]]
    assert last[0] == last[-1]
    assert r.history[-1]["phase"] == "polish"  # then a local search around the best


@pytest.mark.parametrize("kw,msg", [({"eps": 0.0}, "eps"), ({"eps": 1.0}, "eps"),
                                    ({"population": 1}, "population"), ({"generations": -1}, "generations"),
                                    ({"time_limit": 0}, "^time_limit ")])
def test_bad_settings(image, kw, msg):
    with pytest.raises(ShapesearchError, match=msg):
        _search(image, **kw)


def test_restarts_continue_a_stalled_search_reproducibly_and_keep_its_best(image, tmp_path):
    plain = _search(image, seed=2, generations=30, stall=2)
    assert plain.history[-1]["generation"] < 30  # it stalled
    again = _search(image, seed=2, generations=30, stall=2, restarts=2)
    assert _summary(again) == _summary(_search(image, seed=2, generations=30, stall=2, restarts=2))
    assert again.evaluations > plain.evaluations
    assert again.history[-1]["generation"] > plain.history[-1]["generation"]
    assert again.params <= plain.params  # the elite survives every restart
    # a run checkpointed before its restarts resumes to the same end
    _search(image, tmp_path / "run", seed=2, generations=4, stall=2, restarts=2)
    resumed = _search(image, tmp_path / "run", resume=True, seed=2, generations=30, stall=2, restarts=2)
    assert _summary(resumed)[:4] == _summary(again)[:4]

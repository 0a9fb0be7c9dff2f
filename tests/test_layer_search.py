"""Per-layer shape search: the balanced rule, the two layouts, the GA on matrices, budgets, CLI."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
import ray
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shapesearch.engine.operators import ShapeSpace, mutate
from shapesearch.errors import ShapesearchError
from shapesearch.matrix.budget import allocate
from shapesearch.matrix.formats import (
    Format,
    all_pairings,
    balanced_factors,
    balanced_shape,
    layer_tensor,
    modes_of,
    shape_from_modes,
)
from shapesearch.matrix.layer_search import LayerSearchConfig, leaders, make_plan, search_layers, search_matrix
from shapesearch.matrix.plan import PLAN_VERSION, Plan

from .test_cli import _error, _run

FAST = LayerSearchConfig(population=8, generations=4, stall=3, polish_rounds=2)


# the table in saten-ptnn.md §7 (tensorlearn's rule, checked against its code)
@pytest.mark.parametrize("n_in,n_out,shape", [
    (768, 768, [32, 24, 32, 24]), (768, 3072, [32, 24, 64, 48]), (3072, 768, [64, 48, 32, 24]),
    (2048, 2048, [64, 32, 64, 32]), (2048, 512, [64, 32, 32, 16]), (2048, 8192, [64, 32, 128, 64]),
    (8192, 2048, [128, 64, 64, 32]), (3072, 3072, [64, 48, 64, 48]), (3072, 1024, [64, 48, 32, 32])])
def test_balanced_rule_reproduces_the_authors_shapes(n_in, n_out, shape):
    assert list(balanced_factors(n_in, 2) + balanced_factors(n_out, 2)) == shape
    t = balanced_shape(n_out, n_in, "tt")
    assert t.mode_sizes == tuple(shape)
    assert modes_of(t, "tt") == (tuple(shape[2:]), tuple(shape[:2]))


def test_odd_sizes_get_as_many_modes_as_their_primes_allow():
    assert balanced_factors(427, 3) == (61, 7)
    assert balanced_factors(61, 2) == (61,)
    t = balanced_shape(427, 61, "ttm")
    assert modes_of(t, "ttm") == ((427,), (61,))


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_modes_round_trip_and_layouts_stay_valid_under_mutation(fmt):
    import random

    outs, ins = ((6, 1, 4), (2, 9, 1)) if fmt == "ttm" else ((8, 3), (2, 3, 3))
    t = shape_from_modes(outs, ins, fmt)
    assert modes_of(t, fmt) == (outs, ins)
    shape = (24, 18) if fmt == "ttm" else (18, 24)
    space = ShapeSpace(shape, max_pad=0.0, axis_per_mode=Format(fmt).axis_per_mode)
    assert space.valid(t) and all(p == (n,) for p, n in zip(space.paddings, shape))
    rng = random.Random(0)
    for _ in range(200):
        t = mutate(t, rng, space)
        assert space.valid(t) and t.padded_shape == shape
        o, i = modes_of(t, fmt)
        assert np.prod(o) == 24 and np.prod(i) == 18
    # a tt mode that mixes input and output digits is outside the tt layout
    assert not ShapeSpace((18, 24), max_pad=0.0, axis_per_mode=True).valid(shape_from_modes((6, 4), (3, 6), "ttm"))


@pytest.mark.parametrize("outs,ins", [((2, 3, 4), (4, 2, 3)), ((12, 1), (1, 16)), ((4, 1, 3), (1, 8, 2))])
def test_layer_tensor_pairs_output_digit_k_with_input_digit_k(outs, ins):
    """The tensor the ttm layers decompose is the one the search scores: digit k of the output
    paired with digit k of the input; tt is Wᵀ reshaped row-major."""
    w = np.random.default_rng(5).standard_normal((int(np.prod(outs)), int(np.prod(ins))))
    d = len(outs)
    paired = w.reshape(*outs, *ins).transpose([i for k in range(d) for i in (k, d + k)])
    assert np.array_equal(layer_tensor(w, Format.TTM, outs, ins), paired.reshape([m * n for m, n in zip(outs, ins)]))
    if 1 not in outs + ins:
        assert np.array_equal(layer_tensor(w, "tt", outs, ins), w.T.reshape(*ins, *outs))
    with pytest.raises(ShapesearchError, match="format must be one of ttm, tt"):
        layer_tensor(w, "cp", outs, ins)


def test_a_kronecker_product_is_found_at_rank_one():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 4))
    w = np.kron(a, b) + 1e-4 * rng.standard_normal((24, 24))
    rec = search_matrix(w, 0.05, "ttm")  # default effort: it has to reorder digits to see it
    assert rec.ranks == (1, 1, 1) and rec.params == 48
    assert rec.rel_error <= 0.05
    # the balanced shape (6·4 × 4·6 pairs) cannot see the structure
    assert rec.balanced_params > 4 * rec.params


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_search_never_loses_to_balanced_and_meets_eps(fmt):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 36)) @ np.diag(np.linspace(1, 0.01, 36)) @ rng.standard_normal((36, 36))
    for eps in (0.1, 0.4):
        rec = search_matrix(w, eps, fmt, FAST)
        assert rec.params <= rec.balanced_params
        assert rec.rel_error <= eps and rec.balanced.rel_error <= eps
        assert np.prod(rec.out_modes) == 48 and np.prod(rec.in_modes) == 36


def test_search_finds_the_exhaustive_optimum_over_three_mode_pairings_on_a_small_layer():
    from shapesearch.engine.fitness import EvalSettings, confirm

    rng = np.random.default_rng(2)
    w = np.kron(rng.standard_normal((2, 3)), rng.standard_normal((6, 4))) + 0.05 * rng.standard_normal((12, 12))
    best = min(confirm(w, float(np.linalg.norm(w)), (s.key, EvalSettings(0.2).to_dict()))["params"]
               for s in all_pairings(12, 12, 2) + all_pairings(12, 12, 3))
    rec = search_matrix(w, 0.2, "ttm")
    assert rec.params <= best


def test_ray_layer_search_equals_in_process():
    rng = np.random.default_rng(3)
    weights = {"a": rng.standard_normal((24, 16)), "b": rng.standard_normal((16, 16)) ** 3,
               "c": rng.standard_normal((16, 16)), "d": rng.standard_normal((16, 16)) ** 2}  # c: a follower
    local = search_layers(weights, [0.3, 0.6], "ttm", FAST, workers=0)
    ray.shutdown()
    try:
        remote = search_layers(weights, [0.3, 0.6], "ttm", FAST, workers=2)
    finally:
        ray.shutdown()
    for name in weights:
        for eps in (0.3, 0.6):
            keep = ("out_modes", "in_modes", "ranks", "params", "reverse_sweep")
            assert {k: getattr(local[name][eps], k) for k in keep} == {k: getattr(remote[name][eps], k) for k in keep}


def test_layers_of_one_size_start_from_their_leaders():
    rng = np.random.default_rng(8)
    basis = [rng.standard_normal((36, 48)) for _ in range(3)]
    # six "trained" layers of one size: shared structure, each its own noise; one odd size
    weights = {f"l{i}": sum(rng.standard_normal() * b for b in basis) @ np.diag(np.linspace(1, 0.1, 48))
               + 0.05 * rng.standard_normal((36, 48)) for i in range(6)}
    weights["odd"] = rng.standard_normal((20, 12))
    assert leaders(weights, 2) == ["l0", "l5", "odd"]
    warm = search_layers(weights, [0.3], "ttm", FAST, workers=0)
    full = search_layers(weights, [0.3], "ttm", dataclasses.replace(FAST, warm_start=False), workers=0)
    for name in ("l0", "l5", "odd"):  # leaders: the full search itself
        assert warm[name][0.3].params == full[name][0.3].params
    for name in ("l1", "l2", "l3", "l4"):
        plan = warm[name][0.3]
        assert plan.rel_error <= 0.3 and plan.params <= plan.balanced_params
        assert plan.evaluations < full[name][0.3].evaluations
        assert plan.params <= 1.05 * full[name][0.3].params


def test_budget_allocation_is_optimal_on_small_instances():
    rng = np.random.default_rng(4)
    for trial in range(5):
        options = []
        for _ in range(5):
            params = sorted(rng.integers(10, 200, 4), reverse=True)
            energy = sorted(rng.uniform(0, 10, 4))
            options.append(list(zip(map(int, params), energy)))
        budget = int(sum(np.mean([p for p, _ in o]) for o in options))
        choice = allocate(options, budget, seed=trial)
        assert sum(o[c][0] for o, c in zip(options, choice)) <= budget
        best = min(sum(o[c][1] for o, c in zip(options, cs)) for cs in itertools.product(range(4), repeat=5)
                   if sum(o[c][0] for o, c in zip(options, cs)) <= budget)
        assert sum(o[c][1] for o, c in zip(options, choice)) == pytest.approx(best)
    with pytest.raises(ShapesearchError, match="below the smallest plan"):
        allocate([[(10, 1.0), (20, 0.5)]], 5)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=36, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=6, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def test_layers_cli_writes_a_plan_for_every_linear(tiny_dir, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code, text, _ = _run(["layers", "--model", tiny_dir, "--eps", "0.4", "--generations", "3",
                          "--population", "6", "--workers", "0", "--out", out], capsys)
    assert code == 0 and "mlp.down_proj" in text
    plan = json.loads(out.read_text())
    assert len(plan["layers"]) == 2 * 7
    for name, rec in plan["layers"].items():
        assert rec["params"] <= rec["balanced_params"] and rec["rel_error"] <= 0.4
        assert rec["type"] in name
    s = plan["summary"]
    assert s["params"] == sum(r["params"] for r in plan["layers"].values())
    # with a budget every layer picks its ε from the grid and the whole plan fits
    out2 = tmp_path / "plan2.json"
    code, text, _ = _run(["layers", "--model", tiny_dir, "--budget", "0.5", "--eps-grid", "0.3", "0.6", "0.9",
                          "--generations", "2", "--population", "4", "--workers", "0", "--out", out2], capsys)
    plan2 = json.loads(out2.read_text())
    assert code == 0 and plan2["summary"]["fits_budget"]
    assert plan2["summary"]["params"] <= 0.5 * plan2["summary"]["dense_params"]
    assert {r["eps"] for r in plan2["layers"].values()} <= {0.3, 0.6, 0.9}


@pytest.mark.parametrize("args,msg", [
    (["--eps", "1.5"], "must be in (0, 1)"),
    (["--budget", "-3"], "fraction in (0, 1) of the dense parameters or a whole parameter count, got -3"),
    (["--budget", "1.5"], "got 1.5"),
    (["--budget", "1"], "got 1"),
    (["--layers", "nothing-like-this"], "no layer name contains"),
])
def test_layers_cli_bad_inputs(tiny_dir, tmp_path, capsys, args, msg):
    out = tmp_path / "plan.json"
    assert msg in _error(["layers", "--model", tiny_dir, "--workers", "0", "--generations", "1",
                          "--population", "4", "--out", out, *args], capsys)
    assert not out.exists()


def test_a_budget_below_every_plan_fails_after_the_search_and_writes_nothing(tiny_dir, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code, _, err = _run(["layers", "--model", tiny_dir, "--workers", "0", "--generations", "1", "--population", "4",
                         "--budget", "10", "--eps-grid", "0.5", "--out", out], capsys)
    assert code == 2 and "below the smallest plan" in err.strip().splitlines()[-1]
    assert not out.exists()


def test_layers_cli_does_not_write_over_a_plan(tiny_dir, tmp_path, capsys):
    out = tmp_path / "plan.json"
    out.write_text("keep")
    assert "exists" in _error(["layers", "--model", tiny_dir, "--out", out], capsys)
    assert out.read_text() == "keep"
    assert "not a built-in name" in _error(["layers", "--model", tmp_path / "nope", "--out", tmp_path / "p.json"],
                                           capsys)


@pytest.mark.parametrize("args,msg", [
    (["saten"], "--plan is needed"),
    (["saten", "--plan", "PLAN"], "exactly one of density"),
    (["saten", "--plan", "PLAN", "--density", "0.1", "--nm", "2:4"], "exactly one of density"),
    (["saten", "--plan", "PLAN", "--nm", "2-4"], "--nm must look like 2:4"),
    (["saten", "--plan", "PLAN", "--density", "1.5"], "density must be in [0, 1]"),
    (["tt", "--plan", "PLAN", "--density", "0.1"], "for saten"),
    (["tt", "--plan", "NOPLAN"], "not found"),
    (["flat-llm", "--plan", "PLAN"], "are for tt and saten"),
    (["flat-llm", "--dense-inputs"], "are for tt and saten"),
    (["tt", "--plan", "PLAN", "--alternations", "2"], "for saten"),
    (["flat-llm", "--alternations", "1"], "for saten"),
    (["saten", "--plan", "PLAN", "--density", "0.1", "--alternations", "-1"], "--alternations must be an integer in"),
    (["saten", "--plan", "PLAN", "--density", "0.1", "--alternations", "11"], "--alternations must be an integer in"),
    (["ptnn", "--density", "0.1"], "--density is not a ptnn option"),
    (["ptnn", "--warmup", "0.5"], "--warmup is not a ptnn option"),
    (["ptnn", "--samples", "0"], "--samples is not a ptnn option"),
    (["ptnn", "--calib", "NOPLAN"], "--calib is not a ptnn option"),
])
def test_compress_tt_saten_cli_bad_inputs(tiny_dir, tmp_path, capsys, args, msg):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"model.layers.0.mlp.up_proj": {
        "format": "ttm", "out_modes": [36], "in_modes": [24], "eps": 0.5}}}))
    args = [str(plan) if a == "PLAN" else str(tmp_path / "none.json") if a == "NOPLAN" else a for a in args]
    out = tmp_path / "out"
    assert msg in _error(["compress", args[0], "--model", tiny_dir, *args[1:], "--out", out], capsys)
    assert not out.exists()


def _tiny_plan() -> Plan:
    rng = np.random.default_rng(6)
    weights = {"a": rng.standard_normal((12, 8)), "b": rng.standard_normal((8, 8))}
    found = search_layers(weights, [0.5], "ttm", FAST, workers=0)
    norms2 = {n: float(np.sum(w ** 2)) for n, w in weights.items()}
    return make_plan(found, norms2, None, model="tiny", layer_types={"a": "a", "b": "b"},
                     biases={"a": True, "b": False})


def test_plan_round_trips_through_versioned_json_and_reads_unversioned_files(tmp_path):
    plan = _tiny_plan()
    assert plan.version == PLAN_VERSION and plan.format is Format.TTM and plan.eps == 0.5
    assert plan.summary.params == sum(r.params for r in plan.layers.values())
    back = Plan.load(plan.save(tmp_path / "plan.json"))
    assert back == plan
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["version"] == PLAN_VERSION and data["layers"]["a"]["format"] == "ttm"
    del data["version"]  # a plan written before the field: version 1
    assert Plan.from_dict(data) == plan
    hand = Plan.from_dict({"layers": {"x": {"format": "tt", "out_modes": [4, 2], "in_modes": [3], "eps": 0.2}}})
    assert hand.layers["x"].out_features == 8 and hand.layers["x"].params is None and hand.summary is None


@pytest.mark.parametrize("change,msg", [
    (lambda d: d.update(version=99), "plan version 99"),
    (lambda d: d.update(layers={}), "lists no layers"),
    (lambda d: d["layers"]["a"].pop("in_modes"), "lacks \\['in_modes'\\]"),
    (lambda d: d["layers"]["a"].update(format="cp"), "format must be one of ttm, tt"),
    (lambda d: d["layers"]["a"].update(out_modes=[5, 0]), "positive integers"),
    (lambda d: d["layers"]["a"].update(out_features=13), "not the product"),
])
def test_bad_plans_say_what_to_do(change, msg):
    data = _tiny_plan().to_dict()
    change(data)
    with pytest.raises(ShapesearchError, match=msg) as info:
        Plan.from_dict(data)
    assert "shapesearch layers" in str(info.value)

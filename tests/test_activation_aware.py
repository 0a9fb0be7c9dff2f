"""Activation-aware layer shapes (whitened search, exact fold of L⁻¹), the activation-aware
Saten residual, sensitivity budgets and recipes, on tiny random models."""

import copy
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

import compressors
from compressors import FlatLLMConfig, SatenConfig, TTConfig
from compressors.calibration import input_moments, layer_inputs, recorded_input_moments, staged_moments
from compressors.layer_plans import PlanRequest, plan_layers, search_options
from compressors.sensitivity import output_sensitivity
from compressors.targets import target_linears
from compressors.tt_linear import tt_layer
from compressors.whitening import (
    activation_error,
    fold_inverse,
    refit_sparse,
    whitened_tt_layer,
    whitening_factor,
)
from shapesearch.engine.operators import ShapeSpace
from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.matrix.formats import shape_from_modes
from shapesearch.matrix.layer_search import LayerSearchConfig, search_matrix
from shapesearch.matrix.plan import Plan

from .test_cli import _error, _run
from .test_tensorize import IDS, assert_same_logits, tiny_llama
from .tiny_models import TEXT, tiny_llama_dir

WINDOWS = [torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(s)) for s in range(8)]


def correlated(n_in=24, n_out=36, tokens=400, seed=0):
    """A weight and inputs with very unequal, correlated input directions (as trained layers see)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g, dtype=torch.float64) * torch.logspace(0, -2, n_in, dtype=torch.float64)
    x = torch.randn(tokens, n_in, generator=g, dtype=torch.float64) @ mix.T
    w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    return w, x.T @ x / tokens


def test_a_whole_axis_stays_in_one_mode_in_its_own_order():
    space = ShapeSpace((36, 24), max_pad=0.0, whole_axis=1)
    assert space.valid(shape_from_modes((6, 6), (24, 1), "ttm"))
    assert space.valid(shape_from_modes((1, 36), (24, 1), "ttm"))
    assert not space.valid(shape_from_modes((6, 6), (4, 6), "ttm"))  # inputs split over two cores


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_whole_input_search_keeps_every_input_digit_in_one_core(fmt):
    w, _ = correlated()
    rec = search_matrix(w.numpy(), 0.3, fmt, LayerSearchConfig(population=6, generations=3, whole_input=True))
    assert sum(1 for n in rec.in_modes if n > 1) == 1 and rec.rel_error <= 0.3
    assert rec.params <= rec.balanced.params  # the reference is the rank factorization, which it never exceeds
    assert max(rec.balanced.in_modes) == 24 and max(rec.balanced.out_modes) == 36


@pytest.mark.parametrize("fmt,out_modes,in_modes", [("ttm", (6, 6), (24, 1)), ("ttm", (1, 36), (24, 1)),
                                                     ("tt", (6, 6), (24,))])
def test_whitened_layer_bounds_the_activation_error_at_the_same_parameters(fmt, out_modes, in_modes):
    w, moment = correlated()
    factor = whitening_factor(moment)
    layer = whitened_tt_layer(w, fmt, out_modes, in_modes, 0.2, factor)
    plain = tt_layer(w @ factor, fmt, out_modes, in_modes, 0.2)
    assert sum(c.numel() for c in layer.cores) == sum(c.numel() for c in plain.cores)
    error = activation_error(w, layer.weight(), moment)
    assert error <= 0.2 * (1 + 1e-9)
    # folding L⁻¹ in is exact: the layer's weight times L is the TT of W·L
    torch.testing.assert_close(layer.weight() @ factor, plain.weight(), rtol=1e-9, atol=1e-9)
    # the weight-space TT of the same shape and parameter count is worse on these inputs
    weight_space = tt_layer(w, fmt, out_modes, in_modes, 0.2)
    assert sum(c.numel() for c in weight_space.cores) >= sum(c.numel() for c in layer.cores) or \
        activation_error(w, weight_space.weight(), moment) > error


def test_fold_refuses_split_inputs():
    w, moment = correlated()
    layer = tt_layer(w, "ttm", (6, 6), (4, 6), 0.5)
    with pytest.raises(ValueError, match="one core"):
        fold_inverse(layer, whitening_factor(moment))


def test_refit_sparse_is_the_least_squares_fit_on_its_support():
    e, moment = correlated(n_in=10, n_out=4, seed=2)
    factor = whitening_factor(moment)
    indices = torch.tensor([0, 3, 7, 12, 13, 19, 25, 26, 27, 39])  # rows with 3, 3, 3, 1 entries
    values = refit_sparse(e, indices, factor)
    rows, cols = indices // 10, indices % 10
    for r in range(4):
        j = cols[rows == r]
        best = torch.linalg.solve(moment[j][:, j], (e[r] @ moment)[j])
        torch.testing.assert_close(values[rows == r], best, rtol=1e-8, atol=1e-10)
    s = torch.zeros_like(e).reshape(-1).index_put((indices,), values).reshape(e.shape)
    raw = torch.zeros_like(e).reshape(-1).index_put((indices,), e.reshape(-1)[indices]).reshape(e.shape)
    cost = lambda d: float(((d @ moment) * d).sum())  # noqa: E731
    assert cost(e - s) <= cost(e) and cost(e - s) <= cost(e - raw)


def test_refit_sparse_runs_conjugate_gradients_on_rows_too_wide_to_solve_directly():
    """With one CG step allowed, a full row (10³ ≥ 6·1·10²) takes the CG path: not exact, but no
    worse than E's own values or zero; the narrow rows stay exact. With 40 steps all are direct."""
    e, moment = correlated(n_in=10, n_out=3, seed=4)
    factor = whitening_factor(moment)
    indices = torch.tensor([*range(10), 12, 15, 21])  # row 0 whole, row 1 two entries, row 2 one
    cost = lambda d: ((d @ moment) * d).sum(1)  # noqa: E731
    for iterations, row0_exact in ((1, False), (40, True)):
        values = refit_sparse(e, indices, factor, iterations=iterations)
        s = torch.zeros_like(e).reshape(-1).index_put((indices,), values).reshape(e.shape)
        torch.testing.assert_close(s[0], e[0]) if row0_exact else None
        assert cost(e - s)[0] <= min(cost(e)[0], cost(torch.zeros_like(e))[0]) + 1e-12
        assert not row0_exact or float(cost(e - s)[0]) < 1e-20
        for r, j in ((1, [2, 5]), (2, [1])):
            best = torch.linalg.solve(moment[j][:, j], (e[r] @ moment)[j])
            # Cholesky against LU on a Σ of condition ~1e8: they agree to ~1e-7, not to eps
            torch.testing.assert_close(s[r, j], best, rtol=1e-5, atol=1e-8)


def test_activation_aware_plan_round_trips_and_compresses_within_its_bound():
    model = tiny_llama()
    plan = plan_layers(model, eps=0.3, fmt="ttm", generations=2, population=4, workers=0, calibration=WINDOWS)
    assert plan.calibration == {"windows": 6, "held_out_windows": 2, "tokens": 240, "sensitivity": False}
    assert all(r.error_space == "activation" and r.held_out_error is not None and r.rel_error <= 0.3
               for r in plan.layers.values())
    plan = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    with pytest.raises(ShapesearchError, match="activation-aware"):
        compressors.compress(copy.deepcopy(model), TTConfig(plan))
    dense_moments = input_moments(model, WINDOWS[:6], list(plan.layers))
    dense = target_linears(model)
    # without rank caps (a hand-written plan) a sequential fit keeps ε on its own inputs
    uncapped = replace(plan, layers={n: replace(r, ranks=None) for n, r in plan.layers.items()})
    for config in (TTConfig(uncapped), SatenConfig(uncapped, density=0.1), TTConfig(plan, sequential=False)):
        net = copy.deepcopy(model)
        report = compressors.compress(net, config, calibration=WINDOWS)
        # sequential: each layer is bounded on what it receives in the compressed model, which is
        # what it was fitted on only if every stage before it was compressed first
        moments = input_moments(net, WINDOWS[:6], list(plan.layers)) if config.sequential else dense_moments
        errors = {n: activation_error(dense[n].weight, net.get_submodule(n).weight(), moments[n]) for n in plan.layers}
        assert max(errors.values()) <= 0.3 * (1 + 1e-5), errors  # float32 cores
        # the report gives the same error, on the inputs each layer was fitted to
        assert {r["name"]: r["activation_error"] for r in report["layers"]} == pytest.approx(errors, rel=1e-3)
        assert report["replaced_params_after"] < report["replaced_params_before"]
        if config.sequential:  # and later layers do see other inputs than the dense ones
            assert any(not torch.allclose(moments[n], dense_moments[n]) for n in plan.layers)
    # with the searched ranks as caps, every layer stays within the plan's size
    report = compressors.compress(copy.deepcopy(model), TTConfig(plan), calibration=WINDOWS)
    assert all(r["params"] <= plan.layers[r["name"]].params for r in report["layers"])
    bad = plan.to_dict()
    del bad["calibration"]
    with pytest.raises(ShapesearchError, match="calibration record"):
        Plan.from_dict(bad)


def test_staged_moments_visit_the_linears_in_the_order_their_inputs_are_made():
    model = tiny_llama()
    layer = model.model.layers[1]
    hidden = [torch.randn(1, 40, model.config.hidden_size, generator=torch.Generator().manual_seed(s))
              for s in range(2)]
    inputs = [(h, kw) for h, kw in zip(hidden, layer_inputs(model, WINDOWS[:2])[1][1])]
    paths = [p for p, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    stages = []

    def rewrite(stage, moment):
        stages.append(sorted(stage))
        for p in stage:  # zero the stage: what the next stage sees must change with it
            layer.get_submodule(p).weight.data.zero_()

    staged_moments(layer, inputs, paths[::-1], rewrite)
    assert stages == [["self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
                      ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]


def test_moments_recorded_in_the_sensitivity_pass_are_each_linears_input_moment():
    model = tiny_llama()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers.1." in n]
    seen = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].detach()))
             for n in names]
    with torch.no_grad():
        for w in WINDOWS[:3]:
            model(input_ids=w)
    for h in hooks:
        h.remove()
    plain = input_moments(model, WINDOWS[:3], names)
    with recorded_input_moments(model, names) as recorded:
        output_sensitivity(model, WINDOWS[:3], names)
    for n in names:
        x = torch.cat(seen[n]).reshape(-1, seen[n][0].shape[-1]).double()
        by_hand = x.T @ x / x.shape[0]
        # float64 sums of the same float32 inputs: equal but for the order of the additions
        torch.testing.assert_close(plain[n], by_hand, rtol=1e-12, atol=1e-12 * float(by_hand.abs().max()))
        torch.testing.assert_close(recorded[n], plain[n], rtol=1e-12, atol=1e-12 * float(by_hand.abs().max()))
    # q/k/v read one tensor (its xᵀx computed once): their moments are one value
    attention = [n for n in names if n.endswith(("q_proj", "k_proj", "v_proj"))]
    assert all(torch.equal(plain[attention[0]], plain[n]) for n in attention[1:])
    with pytest.raises(ValueError, match="no calibration windows"):
        input_moments(model, [], names)


def test_sensitivity_budget_fits_and_differs_from_the_energy_budget():
    model = tiny_llama()
    options = search_options(model, (0.1, 0.3, 0.5, 0.7), "ttm", generations=1, population=4, workers=0,
                             calibration=WINDOWS, sensitivity=True)
    assert all(v > 0 for v in options.importance.values())
    energy, sensitive = options.plan(0.5), options.plan(0.5, sensitivity=True)
    for plan in (energy, sensitive):
        assert plan.summary.fits_budget and plan.summary.params <= 0.5 * plan.summary.dense_params
    assert sensitive.calibration["sensitivity"] and not energy.calibration["sensitivity"]
    assert [r.eps for r in energy.layers.values()] != [r.eps for r in sensitive.layers.values()]
    with pytest.raises(ArgumentError, match="sensitivity"):
        plan_layers(model, eps=0.3, workers=0, sensitivity=True)


def test_sensitivity_is_the_mean_squared_output_gradient():
    model = tiny_llama().double()
    name = "model.layers.1.mlp.down_proj"
    got = output_sensitivity(model, WINDOWS[:2], [name])[name]
    grads = []

    def keep(module, args, out) -> None:
        out.register_hook(grads.append)

    handle = model.get_submodule(name).register_forward_hook(keep)
    total, tokens = 0.0, 0
    for w in WINDOWS[:2]:
        loss = model(input_ids=w, labels=w).loss * (w.shape[1] - 1)
        loss.backward()
        total += float(grads[-1].pow(2).sum())
        tokens += w.shape[1] - 1
    handle.remove()
    assert got == pytest.approx(total / tokens / 24, rel=1e-9)


def test_recipe_applies_steps_in_order_and_round_trips(tmp_path):
    model = tiny_llama()
    steps = [FlatLLMConfig(0.2), SatenConfig(PlanRequest(eps=0.4, activations=True, generations=1, population=4,
                                                         workers=0, layers="mlp"), density=0.05,
                                   alternations=2)]
    seen = []
    report = compressors.compress(model, steps, calibration=WINDOWS,
                                  after_step=lambda m, r: seen.append(r["decoder_linear_params_now"]))
    assert [s["method"] for s in report["steps"]] == ["flat-llm", "saten"]
    assert seen[0] > seen[1] == report["decoder_linear_params_after"] < report["decoder_linear_params_before"]
    assert "plan" in report["steps"][1] and report["steps"][1]["plan"]["calibration"]["windows"] == 6
    ref = model(input_ids=IDS).logits.detach()
    compressors.save(model, tmp_path / "m")
    assert_same_logits(compressors.load(tmp_path / "m")(input_ids=IDS).logits.detach(), ref)
    with pytest.raises(ArgumentError, match="put it first"):
        compressors.compress(tiny_llama(), [TTConfig(PlanRequest(eps=0.4, workers=0)), FlatLLMConfig(0.2)])


def test_recipe_cli_reports_every_step_and_refuses_bad_files(tmp_path, capsys):
    model = tiny_llama_dir(tmp_path / "model")
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"steps": [
        {"compressor": "flat-llm", "ratio": 0.2},
        {"compressor": "tt", "dense_inputs": True,
         "plan": {"eps": 0.4, "activations": True, "generations": 1, "population": 4, "workers": 0,
                  "layers": "self_attn"}}]}))
    out = tmp_path / "out"
    base = ["--model", model, "--calib", calib, "--samples", "4", "--seqlen", "32", "--out"]
    code, text, _ = _run(["compress", "recipe", recipe, *base, out, "--json"], capsys)
    report = json.loads(text)
    assert code == 0 and [s["method"] for s in report["steps"]] == ["flat-llm", "tt"]
    assert all(np.isfinite(s["perplexity"]) for s in report["steps"])
    assert json.loads((out / "report.json").read_text())["steps"][1]["replaced_layers"] == 4 * 2
    bad = tmp_path / "bad.json"
    for content, msg in [("{", "is not UTF-8 JSON"), ('{"steps": []}', "non-empty"),
                         ('{"steps": [{"compressor": "zip"}]}', "step 1 needs"),
                         ('{"steps": [{"compressor": "tt", "ratio": 0.1}]}', "unknown key"),
                         ('{"steps": [{"compressor": "tt", "plan": {"colour": 1}}]}', "unknown plan option"),
                         ('{"steps": [{"compressor": "tt", "plan": {"eps": 0.3}}, {"compressor": "flat-llm"}]}',
                          "put it first")]:
        bad.write_text(content)
        assert msg in _error(["compress", "recipe", bad, *base, tmp_path / "o2"], capsys)
        assert not (tmp_path / "o2").exists()
    assert "file is missing" in _error(["compress", "recipe", *base, tmp_path / "o2"], capsys)
    assert "goes into the recipe" in _error(["compress", "recipe", recipe, "--ratio", "0.3", *base,
                                             tmp_path / "o2"], capsys)
    assert "compress recipe FILE.json" in _error(["compress", "flat-llm", recipe, *base, tmp_path / "o2"], capsys)


def test_layers_cli_activation_aware_plan_compresses_only_on_its_windows(tmp_path, capsys):
    model = tiny_llama_dir(tmp_path / "model")
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)
    plan = tmp_path / "plan.json"
    win = ["--calib", calib, "--samples", "4", "--seqlen", "32"]
    code, text, _ = _run(["layers", "--model", model, "--activations", *win, "--budget", "0.6", "--eps-grid",
                          "0.2", "0.5", "--sensitivity", "--generations", "1", "--population", "4", "--workers", "0",
                          "--out", plan], capsys)
    assert code == 0 and "held-out" in text
    record = json.loads(plan.read_text())["calibration"]
    assert record["samples"] == 4 and record["seqlen"] == 32 and record["sensitivity"]
    out = tmp_path / "out"
    assert "--seqlen 32" in _error(["compress", "tt", "--plan", plan, "--model", model, "--calib", calib,
                                    "--samples", "4", "--out", out], capsys)
    assert not out.exists()
    other = tmp_path / "other.txt"  # another text at the path the plan names: refused by its digest
    other.write_text(TEXT[::-1])
    moved = calib.rename(tmp_path / "moved.txt")
    other.rename(calib)
    assert "other calibration windows" in _error(["compress", "tt", "--plan", plan, "--model", model, *win,
                                                  "--out", out], capsys)
    calib.unlink()
    moved.rename(calib)
    # the same text by another path is the same windows
    code, _, _ = _run(["compress", "tt", "--plan", plan, "--model", model, "--calib", os.path.relpath(calib),
                       *win[2:], "--out", out], capsys)
    assert code == 0 and (out / "report.json").exists()
    # sequential (the default) builds the searched ranks: the plan's size exactly; --dense-inputs its ε
    planned = sum(r["params"] for r in json.loads(plan.read_text())["layers"].values())
    assert json.loads((out / "report.json").read_text())["replaced_params_after"] == planned
    code, _, _ = _run(["compress", "tt", "--plan", plan, "--model", model, *win, "--dense-inputs",
                       "--out", tmp_path / "dense"], capsys)
    dense = json.loads((tmp_path / "dense" / "report.json").read_text())
    assert code == 0 and dense["replaced_params_after"] <= planned
    assert "needs --activations and --budget" in _error(["layers", "--model", model, "--sensitivity", "--out",
                                                          tmp_path / "p2.json"], capsys)
    assert "is for --activations" in _error(["layers", "--model", model, "--calib", calib, "--out",
                                             tmp_path / "p2.json"], capsys)
    assert not (tmp_path / "p2.json").exists()


def test_model_front_cli_writes_every_point_and_marks_the_front(tmp_path, capsys):
    model = tiny_llama_dir(tmp_path / "model")
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "front"
    common = ["--model", model, "--calib", text, "--text", text, "--samples", "4", "--seqlen", "32", "--windows", "1",
              "--workers", "1"]  # one Ray task per point, as on a cluster
    code, stdout, _ = _run(["pareto", *common, "--budgets", "0.8,0.6", "--methods", "flat-llm,svd-llm,tt,saten",
                            "--eps-grid", "0.1", "0.3", "0.6", "--out", out, "--json"], capsys)
    rows = json.loads(stdout)["rows"]
    assert code == 0 and len(rows) == 8 and {r["method"] for r in rows} == {"flat-llm", "svd-llm", "tt", "saten"}
    made = [r for r in rows if "error" not in r]
    assert len(made) >= 6  # a budget a method's rounding cannot meet on this tiny model is reported, not fatal
    for r in made:
        assert r["decoder_fraction"] <= r["budget"] + 0.02 and np.isfinite(r["perplexity"]) and r["windows"] == 1
        dominated = any(o["params"] <= r["params"] and o["perplexity"] < r["perplexity"] for o in made)
        assert r["front"] == (not dominated)
    assert json.loads((out / "front.json").read_text()) == rows
    assert (out / "front.png").stat().st_size > 0 and "| tt | 0.8 |" in (out / "front.md").read_text()
    for args, msg in [(["--budgets", "0.8,1.5"], "fractions in (0, 1)"), (["--budgets", "a,b"], "comma-separated"),
                      (["--budgets", "0.8", "--methods", "zip"], "comma-separated names"),
                      (["--budgets", "0.04", "--methods", "saten"], "above 0.05")]:
        assert msg in _error(["pareto", *common, *args, "--out", tmp_path / "o2"], capsys)
        assert not (tmp_path / "o2").exists()
    assert "not empty" in _error(["pareto", *common, "--budgets", "0.8", "--out", out], capsys)

"""Tune the GA's own settings with Optuna on a training set that excludes the benchmark images.

    python benchmarks/tune_ga.py [--trials 40]

Training set: every scikit-image photo bundled offline except the four that
`image_search.py` reports on (astronaut, coffee, chelsea = cat, rocket), each resized to at
most ``MAX_ENTRIES`` entries, two crops, and two synthetic tensors; each at one ε of 0.05 / 0.1
/ 0.2 in turn.  Objective: the mean log CR over the set (higher is better), under the
constraint that the mean number of evaluations stays within ``BUDGET`` × the defaults' (so the
tuner cannot buy CR with a larger search).  Trial 0 is the current defaults.  Searches run in
this process (one core), so the objective does not depend on timing.  The best settings go to
results/ga_tuned.json, the trials to results/tune_ga.jsonl, the table to tune_ga.md.  The
defaults with ``--restarts`` 1 and 2 are scored on the same set (no tuning involved).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import skimage.data
import skimage.transform
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table

from shapesearch.engine.executors import LocalExecutor
from shapesearch.engine.search import SearchConfig, run_search

BENCHMARK_IMAGES = {"astronaut", "coffee", "chelsea", "cat", "rocket"}  # never tuned on
TRAINING_IMAGES = ["camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "cell", "clock",
                   "colorwheel", "immunohistochemistry", "hubble_deep_field", "retina", "logo",
                   "microaneurysms", "horse", "shepp_logan_phantom", "checkerboard"]
MAX_ENTRIES = 120_000
EPS_CYCLE = (0.05, 0.1, 0.2)
BUDGET = 1.25
TUNED = RESULTS / "ga_tuned.json"
JSONL = RESULTS / "tune_ga.jsonl"
MARKDOWN = Path(__file__).parent / "tune_ga.md"


def _fit(img: np.ndarray) -> np.ndarray:
    """Resize (anti-aliased) so the image has at most MAX_ENTRIES entries."""
    scale = min(1.0, math.sqrt(MAX_ENTRIES / img.size))
    if scale < 1.0:
        hw = (max(2, round(img.shape[0] * scale)), max(2, round(img.shape[1] * scale)))
        img = skimage.transform.resize(img, hw + img.shape[2:], anti_aliasing=True)
    return np.asarray(img, dtype=np.float64)


def training_set() -> list[tuple[str, np.ndarray, float]]:
    assert not BENCHMARK_IMAGES & set(TRAINING_IMAGES)
    tensors = []
    for name in TRAINING_IMAGES:
        img = getattr(skimage.data, name)()
        img = img.astype(np.float64) / (255.0 if img.dtype == np.uint8 else max(1.0, float(img.max())))
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        tensors.append((name, _fit(img)))
    retina = skimage.data.retina().astype(np.float64) / 255
    tensors.append(("retina crop 300×420", retina[500:800, 400:820]))
    camera = skimage.data.camera().astype(np.float64) / 255
    tensors.append(("camera crop 250×333", camera[100:350, 60:393]))
    grid = np.linspace(0, 1, 60)
    x, y, z = np.meshgrid(grid, grid, grid[:30], indexing="ij")
    tensors.append(("smooth field 60×60×30", np.sin(3 * x + y) * np.exp(-z) + 0.5 * np.cos(5 * x * y)))
    rng = np.random.default_rng(0)
    low = sum(np.multiply.outer(np.multiply.outer(rng.standard_normal(40), rng.standard_normal(50)),
                                rng.standard_normal(40)) for _ in range(5))
    tensors.append(("rank-5 40×50×40 + 1% noise", low + 0.01 * np.linalg.norm(low) / math.sqrt(low.size)
                    * rng.standard_normal(low.shape)))
    return [(name, t, EPS_CYCLE[i % len(EPS_CYCLE)]) for i, (name, t) in enumerate(tensors)]


def evaluate(settings: dict, tasks) -> dict:
    """Mean log CR and mean evaluations of the GA with ``settings`` over ``tasks``."""
    logs, evals, t0 = [], [], time.perf_counter()
    for _, tensor, eps in tasks:
        config = SearchConfig(eps=eps, **settings)
        result = run_search(tensor, config, LocalExecutor(tensor, float(np.linalg.norm(tensor))))
        logs.append(math.log(result.cr))
        evals.append(result.evaluations)
    return {"mean_log_cr": float(np.mean(logs)), "geomean_cr": float(np.exp(np.mean(logs))),
            "mean_evaluations": float(np.mean(evals)), "seconds": time.perf_counter() - t0,
            "per_task_cr": [round(math.exp(v), 3) for v in logs]}


DEFAULTS = {k: getattr(SearchConfig(), k) for k in
            ("population", "stall", "cxpb", "mutpb", "max_pad", "max_order", "polish_rounds")}


def suggest(trial) -> dict:
    cxpb = trial.suggest_float("cxpb", 0.0, 0.8)
    return {"population": trial.suggest_int("population", 12, 64),
            "stall": trial.suggest_int("stall", 4, 24),
            "cxpb": cxpb,
            "mutpb": trial.suggest_float("mutpb_share", 0.1, 1.0) * (1.0 - cxpb),
            "max_pad": trial.suggest_float("max_pad", 0.02, 0.5),
            "max_order": trial.suggest_int("max_order", 5, 16),
            "polish_rounds": trial.suggest_int("polish_rounds", 0, 20)}


def run(args) -> None:
    tasks = training_set()
    for n in args.restarts:  # the stall rule with restarts, against the defaults' row
        res = evaluate({**DEFAULTS, "restarts": n}, tasks)
        append_row(JSONL, {"trial": f"restarts={n}", "settings": {**DEFAULTS, "restarts": n}, **res,
                           "machine": machine()})
        print(json.dumps({f"restarts={n}": res}), flush=True)
    if args.trials:
        tune(args.trials, tasks)


def tune(trials: int, tasks) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    baseline = evaluate(DEFAULTS, tasks)
    append_row(JSONL, {"trial": "defaults", "settings": DEFAULTS, **baseline, "machine": machine()})
    print(json.dumps({"defaults": baseline}), flush=True)
    limit = BUDGET * baseline["mean_evaluations"]

    def objective(trial):
        settings = suggest(trial)
        res = evaluate(settings, tasks)
        trial.set_user_attr("res", res)
        trial.set_user_attr("settings", settings)
        trial.set_user_attr("constraint", res["mean_evaluations"] - limit)
        append_row(JSONL, {"trial": trial.number, "settings": settings, **res})
        print(json.dumps({"trial": trial.number, "geomean_cr": res["geomean_cr"],
                          "mean_evaluations": res["mean_evaluations"]}), flush=True)
        return res["mean_log_cr"]

    sampler = optuna.samplers.TPESampler(seed=0, constraints_func=lambda t: (t.user_attrs["constraint"],))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials)
    feasible = [t for t in study.trials if t.user_attrs.get("constraint", 1) <= 0]
    best = max(feasible, key=lambda t: t.value) if feasible else None
    out = {"defaults": {"settings": DEFAULTS, **baseline}, "budget": BUDGET,
           "training_set": [(n, list(t.shape), e) for n, t, e in tasks]}
    if best is not None and best.value > baseline["mean_log_cr"]:
        out["tuned"] = {"trial": best.number, "settings": best.user_attrs["settings"], **best.user_attrs["res"]}
    TUNED.write_text(json.dumps(out, indent=1) + "\n")


def tuned_settings() -> dict | None:
    """The settings the last tuning run found better than the defaults, if any."""
    if not TUNED.exists():
        return None
    return json.loads(TUNED.read_text()).get("tuned", {}).get("settings")


def report() -> str:
    if not TUNED.exists():
        return "# GA tuning\n\nNot run yet: `python benchmarks/tune_ga.py`."
    res = json.loads(TUNED.read_text())
    rows = [[name, "×".join(map(str, shape)), eps] for name, shape, eps in res["training_set"]]
    base, tuned = res["defaults"], res.get("tuned")
    stored = load_rows(JSONL)
    trials = [r for r in stored if isinstance(r["trial"], int)]
    restarts = {r["trial"]: r for r in stored if str(r["trial"]).startswith("restarts=")}
    out = ["# GA tuning", "",
           "Printed by `benchmarks/tune_ga.py` (trials in `results/tune_ga.jsonl`). Optuna TPE over the GA's "
           "settings; objective the geometric-mean CR over the training set below, with the mean evaluations "
           f"held within {res['budget']}× the defaults'. The four benchmark images are not in it.", "",
           table(["training tensor", "shape", "ε"], rows), "",
           table(["settings", "geometric-mean CR", "mean evaluations", "seconds (one core, machine not idle)"],
                 [["defaults", base["geomean_cr"], base["mean_evaluations"], base["seconds"]]]
                 + ([[f"tuned (trial {tuned['trial']} of {len(trials)})", tuned["geomean_cr"],
                      tuned["mean_evaluations"], tuned["seconds"]]] if tuned else [])
                 + [[f"defaults, {name} (`--restarts`)", r["geomean_cr"], r["mean_evaluations"], r["seconds"]]
                    for name, r in sorted(restarts.items())]), ""]
    if tuned:
        out += ["Tuned settings: `" + json.dumps(tuned["settings"]) + "`; defaults: `"
                + json.dumps(base["settings"]) + "`.", ""]
    else:
        out += [f"No feasible trial of {len(trials)} beat the defaults.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=40, help="Optuna trials (0: no tuning)")
    p.add_argument("--restarts", type=int, nargs="*", default=[1, 2],
                   help="also score the defaults with these --restarts values")
    main_with_report(p, run, report, MARKDOWN)

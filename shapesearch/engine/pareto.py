"""The CR–ε front from one search: one GA island per ε of a grid, run as one batch.

A decomposition of the multi-objective problem (as MOEA/D does it): island i is the
single-ε search at ε_i — same start, operators, stopping rule and seed, its own
``random.Random``.  The islands share one executor, so the surrogate's unfolding spectra are
computed once for the whole grid, and each generation's new shapes of all islands go out in
one batch, costliest first, so the workers stay busy while one island's slow shapes finish;
the float64 confirmations of every island go out as one batch too.  Optionally (every
``migrate_every`` generations) each island also receives its neighbours' best shapes; off by
default, chosen on training photos (``benchmarks/pareto_migration.md``): it rarely found
better shapes, and sometimes made the run slower or its front worse.  A point is on the
front when no other point has a CR at least as high and a measured error at least as low.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from deap import tools

from ..errors import ArgumentError
from .fitness import confirm, cost_estimate
from .search import MIN_EPS, SearchConfig, _Engine
from .tensorization import Tensorization

if TYPE_CHECKING:
    from .executors import Executor

MAX_POINTS = 24
MIGRATE_EVERY = 0  # see the module docstring


def eps_grid(low: float, high: float, points: int = 6) -> tuple[float, ...]:
    """``points`` values of ε from ``low`` to ``high``, evenly spaced in log (rounded to 4
    significant digits so they print as given)."""
    if not MIN_EPS <= low < high < 1.0:
        raise ArgumentError("pareto", f"needs {MIN_EPS:g} <= LOW < HIGH < 1 (relative Frobenius errors), "
                                      f"got {low:g}:{high:g}")
    if not 2 <= points <= MAX_POINTS:
        raise ArgumentError("pareto", f"needs 2 to {MAX_POINTS} points, got {points}")
    grid = tuple(float(f"{e:.4g}") for e in np.geomspace(low, high, points))
    if grid[-1] >= 1.0 or any(a >= b for a, b in zip(grid, grid[1:])):
        raise ArgumentError("pareto", f"{low:g}:{high:g}:{points} rounds (to 4 significant digits) to ε = "
                                      f"{', '.join(f'{e:g}' for e in grid)}: not {points} distinct values below 1; "
                                      "widen the range or give fewer points")
    return grid


def parse_pareto(text: str) -> tuple[float, ...]:
    """``LOW:HIGH`` or ``LOW:HIGH:POINTS`` (e.g. ``0.02:0.3``) as a grid of ε."""
    parts = text.split(":")
    try:
        numbers = [float(parts[0]), float(parts[1]), *([int(parts[2])] if len(parts) == 3 else [])]
    except (ValueError, IndexError):
        numbers = []
    if not numbers or len(parts) > 3:
        raise ArgumentError("pareto", f"must be LOW:HIGH or LOW:HIGH:POINTS (e.g. 0.02:0.3 or 0.02:0.3:8), "
                                      f"got {text!r}")
    return eps_grid(*numbers)


@dataclass
class ParetoPoint:
    """The confirmed best shape at one grid ε.  CR = original entries / params; ``rel_error``
    measured by reconstruction; ``front``: no other point beats it on both CR and error."""

    eps: float
    shape: Tensorization
    ranks: tuple[int, ...]
    params: int
    cr: float
    rel_error: float
    cores: list
    front: bool = True


@dataclass
class ParetoResult:
    """One confirmed point per grid ε (in grid order) and how the search got there."""

    points: list[ParetoPoint]
    evaluations: int
    cache_hits: int
    seconds: float
    history: list[dict] = field(default_factory=list)


@dataclass
class _Island:
    """One grid ε's search: its engine, population and stopping state."""

    engine: _Engine
    pop: list = field(default_factory=list)
    stall: int = 0
    restarts: int = 0

    def active(self) -> bool:
        config = self.engine.config
        return self.stall < config.stall or self.restarts < config.restarts

    @property
    def best(self) -> int:
        return int(self.pop[0].fitness.values[0])


def _evaluate_together(islands: list[_Island], groups: list[list], executor: Executor) -> None:
    """Fitness for every island's group of individuals, the new shapes of all in one batch."""
    work = [(isl, key) for isl, group in zip(islands, groups) for key in isl.engine.pending(group)]
    work.sort(key=lambda w: -cost_estimate(Tensorization.from_key(w[1])))
    results = executor.map(_Engine.scorer, [isl.engine.work_item(key) for isl, key in work])
    for isl, group in zip(islands, groups):
        mine = [(key, rec) for (owner, key), rec in zip(work, results) if owner is isl]
        isl.engine.assign(group, [k for k, _ in mine], [r for _, r in mine])


def _front(points: list[ParetoPoint]) -> None:
    for p in points:
        p.front = not any(q.cr >= p.cr and q.rel_error <= p.rel_error and (q.cr > p.cr or q.rel_error < p.rel_error)
                          for q in points)


def run_pareto(tensor: np.ndarray, config: SearchConfig, grid: tuple[float, ...], executor: Executor, *,
               on_generation: Callable[[dict], None] | None = None,
               migrate_every: int = MIGRATE_EVERY) -> ParetoResult:
    """The best tensorization of ``tensor`` at every ε of ``grid`` from one search (see the
    module); ``config``'s ε is ignored, its other settings apply to every island (the
    generation and time limits to the whole run).  ``migrate_every``: generations between
    migrations (0: none, each island is then exactly the single-ε search with ``config``'s seed)."""
    if len(grid) < 2 or list(grid) != sorted(set(grid)) or not MIN_EPS <= grid[0] < grid[-1] < 1.0:
        raise ArgumentError("pareto", f"needs at least 2 increasing values of ε in [{MIN_EPS:g}, 1), "
                                      f"got {list(grid)}")
    start = time.perf_counter()
    islands = [_Island(_Engine(tensor, dataclasses.replace(config, eps=eps), executor)) for eps in grid]
    for isl in islands:  # the spectra are computed once (the executor keeps them)
        seeds, _ = isl.engine.seeds()
        isl.pop = tools.selBest(isl.engine.initial_population(seeds), config.population)
    history: list[dict] = []
    gen = 0

    def record(phase: str = "ga") -> None:
        best = [isl.best for isl in islands]
        history.append({"generation": gen, "phase": phase, "best_params": best,
                        "best_cr": [tensor.size / b for b in best],
                        "evaluations": sum(isl.engine.evaluations for isl in islands),
                        "cache_hits": sum(isl.engine.cache_hits for isl in islands),
                        "active": sum(isl.active() for isl in islands),
                        "elapsed": time.perf_counter() - start})
        if on_generation:
            on_generation(history[-1])

    record()
    last_gen_time = 0.0
    while gen < config.generations and any(isl.active() for isl in islands):
        if config.time_limit is not None and time.perf_counter() - start + last_gen_time > config.time_limit:
            break
        t0 = time.perf_counter()
        active = [isl for isl in islands if isl.active()]
        before = [isl.pop[0].fitness.values for isl in active]
        groups = []
        for isl in active:
            if isl.stall >= config.stall:
                isl.pop, isl.stall, isl.restarts = isl.engine.restart(isl.pop), 0, isl.restarts + 1
            i = islands.index(isl)
            migrants = ([isl.engine.individual(islands[j].pop[0][0]) for j in (i - 1, i + 1) if 0 <= j < len(islands)]
                        if migrate_every and gen % migrate_every == 0 else [])
            groups.append((isl.engine.breed(isl.pop), migrants))
        _evaluate_together(active, [own + migrants for own, migrants in groups], executor)
        for isl, (own, migrants), best in zip(active, groups, before):
            # the single search's stopping rule, on what the island found itself (migrants do not
            # count as progress, so trading shapes cannot keep an island going by itself)
            found = min(ind.fitness.values for ind in isl.pop + own)
            isl.pop = isl.engine.survivors(isl.pop, own + migrants)
            isl.stall = isl.stall + 1 if found >= best else 0
        gen += 1
        last_gen_time = time.perf_counter() - t0
        record()
    if config.polish_rounds and (config.time_limit is None or time.perf_counter() - start < config.time_limit):
        for isl in islands:
            isl.pop = isl.engine.polish(isl.pop, config.polish_rounds)
        record("polish")
    candidates = [isl.engine.confirm_candidates() for isl in islands]
    items = [(key, isl.engine.settings) for isl, keys in zip(islands, candidates) for key in keys]
    confirmed = iter(executor.map(confirm, items))
    points = []
    for isl, keys in zip(islands, candidates):
        best = isl.engine.best_confirmed(keys, [next(confirmed) for _ in keys])
        points.append(ParetoPoint(isl.engine.config.eps, Tensorization.from_key(best["key"]), tuple(best["ranks"]),
                                  best["params"], tensor.size / best["params"], best["rel_error"], best["cores"]))
    _front(points)
    return ParetoResult(points, sum(isl.engine.evaluations for isl in islands),
                        sum(isl.engine.cache_hits for isl in islands), time.perf_counter() - start, history)

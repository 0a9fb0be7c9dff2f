"""The CR–ε front from one search: NSGA-II over tensorizations scored at every ε of a grid.

An individual's fitness is its TT parameter count at each grid ε (one objective per ε, all
minimised), from one task that factorises the first unfolding once for every ε
(:func:`~.fitness.score_grid`), so one fitness cache serves the whole grid.  DEAP's NSGA-II
keeps the non-dominated shapes, and its crowding distance keeps the best shape at each ε.
Start (references and the surrogate's seeds at every ε), operators, stopping rules and the
owned ``random.Random`` are the single-ε search's.  At the end the best few shapes at each ε
are confirmed in float64 with the error measured by reconstruction; a point is on the front
when no other point has a CR at least as high and a measured error at least as low.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from deap import base, tools

from ..errors import ArgumentError, ShapesearchError
from .fitness import EvalSettings, confirm, score_grid
from .operators import neighbours
from .search import MIN_EPS, SearchConfig, _Engine
from .tensorization import Tensorization

if TYPE_CHECKING:
    from .executors import Executor

MAX_POINTS = 24
# a generation counts as progress when the grid's geometric-mean CR rises by at least 0.5 %
# (one point of six gaining 3 %, or several a little each)
GAIN = 0.005


def eps_grid(low: float, high: float, points: int = 6) -> tuple[float, ...]:
    """``points`` values of ε from ``low`` to ``high``, evenly spaced in log (rounded to 4
    significant digits so they print as given)."""
    if not MIN_EPS <= low < high < 1.0:
        raise ArgumentError("pareto", f"needs {MIN_EPS:g} <= LOW < HIGH < 1 (relative Frobenius errors), "
                                      f"got {low:g}:{high:g}")
    if not 2 <= points <= MAX_POINTS:
        raise ArgumentError("pareto", f"needs 2 to {MAX_POINTS} points, got {points}")
    grid = np.geomspace(low, high, points)
    return tuple(float(f"{e:.4g}") for e in grid)


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


class GridFitness(base.Fitness):
    """Parameters at each grid ε, all minimised (as many weights as the grid has points)."""

    weights = (-1.0,)

    def __init__(self, objectives: int = 1, values: tuple = ()) -> None:
        self.weights = (-1.0,) * objectives
        super().__init__(values)

    def __deepcopy__(self, memo) -> GridFitness:
        copy_ = GridFitness(len(self.weights))
        copy_.wvalues = self.wvalues
        return copy_


class GridIndividual(list):
    """A one-element list holding a :class:`Tensorization`, with a :class:`GridFitness`."""

    def __init__(self, iterable=(), objectives: int = 1) -> None:
        self.fitness = GridFitness(objectives)
        super().__init__(iterable)


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


class _GridEngine(_Engine):
    def __init__(self, tensor: np.ndarray, config: SearchConfig, grid: tuple[float, ...],
                 executor: Executor) -> None:
        # a copy: seeding sets its ε to each grid point in turn
        super().__init__(tensor, dataclasses.replace(config, eps=grid[-1]), executor)
        self.grid = grid
        self.settings = EvalSettings.for_eps(min(grid), config.carry_over).to_dict()
        self.limits: list[int] | None = None  # per ε, where a sweep may stop (set by select)

    scorer = staticmethod(score_grid)

    def work_item(self, key: tuple) -> tuple:
        return (key, self.settings, self.grid, self.limits)

    def fitness_values(self, rec: dict) -> tuple:
        return tuple(rec["params"])

    def individual(self, shape: Tensorization) -> GridIndividual:
        return GridIndividual([shape], objectives=len(self.grid))

    def select(self, individuals: list, k: int) -> list:
        """NSGA-II; then, per ε, the most parameters among the chosen: a later shape's sweep at
        that ε stops once past it (it would rank last there).  A stopped count is a lower
        bound, which the float64 confirmation never relies on."""
        chosen = tools.selNSGA2(individuals, k) if len(individuals) > k else list(individuals)
        self.limits = [max(ind.fitness.values[i] for ind in chosen) for i in range(len(self.grid))]
        return chosen

    def seeds(self) -> tuple[list[Tensorization], list[dict]]:
        shapes, notes = {}, []
        for eps in self.grid:  # the spectra are computed once (the executor keeps them)
            self.config.eps = eps
            found, found_notes = super().seeds()
            shapes.update((s.key, s) for s in found)
            notes += [{"eps": eps, **n} for n in found_notes]
        return list(shapes.values()), notes

    def best_at(self) -> list[int]:
        """The fewest parameters found so far at each grid ε."""
        recs = list(self.cache.values())
        return [min(r["params"][i] for r in recs if r["complete"][i]) for i in range(len(self.grid))]

    def polish(self, pop: list, rounds: int) -> list:
        """Steepest descent from the best shape at each ε over its one-move neighbourhood."""
        for i in range(len(self.grid)):
            for _ in range(rounds):
                best = min(pop, key=lambda ind: ind.fitness.values[i])
                cands = [self.individual(s) for s in neighbours(best[0], self.space)]
                self.evaluate(cands)
                unique = list({ind[0].key: ind for ind in pop + cands}.values())
                pop = self.select(unique, self.config.population)
                if min(ind.fitness.values[i] for ind in pop) >= best.fitness.values[i]:
                    break
        return pop

    def confirm_points(self) -> list[ParetoPoint]:
        top = self.config.confirm_top
        items, owners = [], []
        for i, eps in enumerate(self.grid):
            ranked = sorted((k for k in self.cache if self.cache[k]["complete"][i]),
                            key=lambda k: (self.cache[k]["params"][i], self.cache[k]["rel_error"][i]))
            settings = EvalSettings.for_eps(eps, self.config.carry_over).to_dict()
            for key in ranked[:top]:
                items.append((key, settings))
                owners.append(i)
        confirmed = self.executor.map(confirm, items)
        points = []
        for i, eps in enumerate(self.grid):
            ok = [(c["params"], c["rel_error"], item[0], c) for (item, c, owner) in zip(items, confirmed, owners)
                  if owner == i and c["rel_error"] <= eps]
            if not ok:
                raise ShapesearchError(f"no candidate met ε = {eps:g} when its error was measured in float64 "
                                       "(rounding at this ε); start the --pareto range higher")
            params, err, key, rec = min(ok, key=lambda x: (x[0], x[1]))
            points.append(ParetoPoint(eps, Tensorization.from_key(key), tuple(rec["ranks"]), params,
                                      self.tensor.size / params, err, rec["cores"]))
        for p in points:
            p.front = not any(q.cr >= p.cr and q.rel_error <= p.rel_error and (q.cr > p.cr or q.rel_error < p.rel_error)
                              for q in points)
        return points


def _geomean_gain(before: list[int], after: list[int]) -> float:
    """Relative rise of the geometric-mean CR over the grid (params fell from ``before``)."""
    return float(np.exp(np.mean(np.log(np.array(before) / np.array(after))))) - 1.0


def run_pareto(tensor: np.ndarray, config: SearchConfig, grid: tuple[float, ...], executor: Executor, *,
               on_generation: Callable[[dict], None] | None = None) -> ParetoResult:
    """The best tensorization of ``tensor`` at every ε of ``grid`` from one search (see the
    module); ``config``'s ε is ignored, its other settings apply (stall: generations in which
    the grid's geometric-mean CR rose by less than ``GAIN``)."""
    if len(grid) < 2 or list(grid) != sorted(set(grid)) or not MIN_EPS <= grid[0] < grid[-1] < 1.0:
        raise ArgumentError("pareto", f"needs at least 2 increasing values of ε in [{MIN_EPS:g}, 1), "
                                      f"got {list(grid)}")
    start = time.perf_counter()
    engine = _GridEngine(tensor, config, tuple(grid), executor)
    seeds, _ = engine.seeds()
    pop = engine.initial_population(seeds)
    history: list[dict] = []
    gen = stall = 0

    def record(phase: str = "ga") -> None:
        best = engine.best_at()
        history.append({"generation": gen, "phase": phase, "best_params": best,
                        "best_cr": [tensor.size / b for b in best],
                        "evaluations": engine.evaluations, "cache_hits": engine.cache_hits,
                        "elapsed": time.perf_counter() - start})
        if on_generation:
            on_generation(history[-1])

    record()
    last_gen_time = 0.0
    while gen < config.generations and stall < config.stall:
        elapsed = time.perf_counter() - start
        if config.time_limit is not None and elapsed + last_gen_time > config.time_limit:
            break
        t0 = time.perf_counter()
        before = engine.best_at()
        pop = engine.step(pop)
        gen += 1
        stall = 0 if _geomean_gain(before, engine.best_at()) >= GAIN else stall + 1
        last_gen_time = time.perf_counter() - t0
        record()
    if config.polish_rounds and (config.time_limit is None or time.perf_counter() - start < config.time_limit):
        pop = engine.polish(pop, config.polish_rounds)
        record("polish")
    points = engine.confirm_points()
    return ParetoResult(points, engine.evaluations, engine.cache_hits, time.perf_counter() - start, history)

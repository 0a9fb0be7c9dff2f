"""The DEAP genetic algorithm over tensorizations.

(μ+λ) evolution with DEAP-style ``var_or`` and truncation selection (so the best shapes always
survive), a fitness cache keyed by the canonical shape, surrogate-seeded start, stopping
by generations / stall / wall time, and a JSON checkpoint every generation.  Fitness is
(parameters, predicted error), lexicographic and minimised; every candidate meets ε by
construction.  The best few are re-scored in float64 and their error measured.

All randomness comes from one ``random.Random(seed)`` the search owns (and checkpoints); the
global ``random`` module is neither used nor seeded.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from deap import base, tools

from ..errors import ArgumentError, ShapesearchError
from . import checkpoint
from .evolution import var_or
from .fitness import EvalSettings, confirm, cost_estimate, score
from .operators import ShapeSpace, crossover, mutate, neighbours
from .surrogate import surrogate_seeds
from .tensorization import Tensorization, interleaved, natural_axes, original

if TYPE_CHECKING:
    from .executors import Executor


class ShapeFitness(base.Fitness):
    """(parameters, predicted relative error), both minimised, compared lexicographically."""

    weights = (-1.0, -1.0)


class ShapeIndividual(list):
    """A DEAP individual: a one-element list holding a :class:`Tensorization`, with its own
    fitness (what ``deap.creator`` would build; ``copy.deepcopy`` clones both)."""

    def __init__(self, iterable=()) -> None:
        self.fitness = ShapeFitness()
        super().__init__(iterable)


MAX_POPULATION = 4096  # the initial population is drawn 50 tries a member: a bound keeps that seconds
MIN_EPS = 1e-10  # float64 reconstruction error alone reaches ~1e-15·√(entries)


@dataclass
class SearchConfig:
    """GA settings.  ``eps``: relative Frobenius error bound; ``time_limit`` in seconds."""

    eps: float = 0.1
    population: int = 32
    generations: int = 60
    stall: int = 12
    restarts: int = 0  # times a stalled population is re-diversified around its elite before stopping
    time_limit: float | None = None
    seed: int = 0
    cxpb: float = 0.4
    mutpb: float = 0.6
    carry_over: bool = True
    max_pad: float = 0.25
    max_order: int = 12
    axis_per_mode: bool = False  # every mode holds one axis's digits (see ShapeSpace)
    whole_axis: int | None = None  # an axis kept in one mode (see ShapeSpace)
    surrogate: bool = True
    confirm_top: int = 4
    polish_rounds: int = 10

    def __post_init__(self) -> None:
        if not MIN_EPS <= self.eps < 1.0:
            raise ArgumentError("eps", f"must be in [{MIN_EPS:g}, 1) (relative Frobenius error; below "
                                       f"{MIN_EPS:g} float64 rounding alone can exceed it), got {self.eps}")
        if not 2 <= self.population <= MAX_POPULATION:
            raise ArgumentError("population", f"must be 2 to {MAX_POPULATION}, got {self.population} (larger "
                                              "populations only repeat shapes; raise --generations instead)")
        if self.stall < 1:
            raise ArgumentError("stall", f"must be at least 1 generation, got {self.stall}")
        if self.restarts < 0:
            raise ArgumentError("restarts", f"must be >= 0, got {self.restarts}")
        if self.generations < 0:
            raise ArgumentError("generations", f"must be >= 0, got {self.generations}")
        if self.time_limit is not None and not 0 < self.time_limit < math.inf:  # NaN fails too
            raise ArgumentError("time_limit", f"must be positive seconds, got {self.time_limit}")
        for name in ("cxpb", "mutpb"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ArgumentError(name, f"must be a probability in [0, 1], got {getattr(self, name)}")
        if self.cxpb + self.mutpb > 1.0:
            raise ArgumentError("cxpb", f"+ mutpb must be <= 1, got {self.cxpb} + {self.mutpb}")


@dataclass
class SearchResult:
    """The confirmed winner and how the search got there.  CR = original entries / params."""

    shape: Tensorization
    ranks: tuple[int, ...]
    params: int
    cr: float
    rel_error: float
    cores: list
    evaluations: int
    cache_hits: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    surrogate: list[dict] = field(default_factory=list)
    reference: dict = field(default_factory=dict)


def _individual(shape: Tensorization) -> ShapeIndividual:
    return ShapeIndividual([shape])


class _Engine:
    def __init__(self, tensor: np.ndarray, config: SearchConfig, executor: Executor,
                 references: dict[str, Tensorization] | None = None) -> None:
        self.tensor, self.config, self.executor = tensor, config, executor
        self.norm = float(np.linalg.norm(tensor))
        self.space = ShapeSpace(tensor.shape, config.max_pad, axis_per_mode=config.axis_per_mode,
                                whole_axis=config.whole_axis)
        self.references = references
        self.settings = EvalSettings.for_eps(config.eps, config.carry_over).to_dict()
        self.cache: dict[tuple, dict] = {}
        self.evaluations = self.cache_hits = 0
        self.rng = random.Random(config.seed)

    # -- individuals and selection (a subclass may score and rank them otherwise) ---------------
    def individual(self, shape: Tensorization):
        return _individual(shape)

    def select(self, individuals: list, k: int) -> list:
        """The ``k`` to keep: the fewest parameters (truncation selection, so the best survive)."""
        return tools.selBest(individuals, k)

    # -- DEAP operator wrappers (individuals hold one tensorization) ---------------------------
    def _mate(self, a, b):
        a[0], b[0] = crossover(a[0], b[0], self.rng, self.space), crossover(b[0], a[0], self.rng, self.space)
        return a, b

    def _mutate(self, ind):
        shape = mutate(ind[0], self.rng, self.space)
        for _ in range(3):  # spend evaluations on shapes not seen yet
            if shape.key not in self.cache:
                break
            shape = mutate(shape, self.rng, self.space)
        ind[0] = shape
        return (ind,)

    # -- fitness -------------------------------------------------------------------------------
    def evaluate(self, individuals: list) -> None:
        """Fitness for the individuals that lack it: cached, or computed on the executor."""
        todo = self.pending(individuals)
        self.assign(individuals, todo, self.executor.map(self.scorer, [self.work_item(k) for k in todo]))

    def pending(self, individuals: list) -> list[tuple]:
        """The keys of ``individuals`` that lack fitness and are not cached, costliest first (so
        no worker is left with one slow shape at the end of a generation); counts cache hits."""
        new: dict[tuple, Tensorization] = {}
        for ind in individuals:
            if ind.fitness.valid:
                continue
            key = ind[0].key
            if key in self.cache or key in new:
                self.cache_hits += 1
            else:
                new[key] = ind[0]
        return sorted(new, key=lambda k: -cost_estimate(new[k]))

    def assign(self, individuals: list, todo: list[tuple], results: list[dict]) -> None:
        """Cache the ``results`` of scoring ``todo`` and give every individual its fitness."""
        self.evaluations += len(todo)
        self.cache.update(zip(todo, results))
        for ind in individuals:
            if not ind.fitness.valid:
                ind.fitness.values = self.fitness_values(self.cache[ind[0].key])

    scorer = staticmethod(score)  # runs on the executor: (tensor, norm, work item) -> record

    def work_item(self, key: tuple) -> tuple:
        return (key, self.settings)

    def fitness_values(self, rec: dict) -> tuple:
        return (rec["params"], rec["rel_error"])

    # -- start ---------------------------------------------------------------------------------
    def reference_shapes(self) -> dict[str, Tensorization]:
        """The tensor as it is, and classic ket augmentation (large axes interleaved digit by
        digit, small ones such as a colour channel last), unless the caller gave its own."""
        if self.references is not None:
            return dict(self.references)
        axes = natural_axes(self.tensor.shape)
        spatial = sum(1 for n in self.tensor.shape if n > 8) or len(axes)
        big_first = tuple(sorted(range(len(axes)), key=lambda a: self.tensor.shape[a] <= 8))
        ka = interleaved(axes, spatial) if big_first == tuple(range(len(axes))) else original(axes)
        return {"original": original(axes), "ket_augmentation": ka}

    def reference(self) -> dict:
        out = {}
        for name, shape in self.reference_shapes().items():
            rec = self.cache.get(shape.key)
            if rec is not None:
                out[name] = {"modes": shape.describe(), "params": rec["params"],
                             "cr": self.tensor.size / rec["params"], "rel_error": rec["rel_error"]}
        return out

    def seeds(self) -> tuple[list[Tensorization], list[dict]]:
        shapes = list(self.reference_shapes().values())
        notes = []
        axes_options = [natural_axes(self.tensor.shape), self.space.smooth_axes()] if self.config.surrogate else []
        for ax in dict.fromkeys(axes_options):
            for s in surrogate_seeds(self.executor, ax, self.config.eps, self.norm, self.config.max_order):
                # the bound holds for either sweep direction
                shapes += [s.shape, dataclasses.replace(s.shape, reverse_sweep=True)]
                notes.append({"order": s.shape.order, "shape": s.shape.describe(),
                              "bound_params": s.bound_params})
        unique = list({s.key: s for s in shapes if self.space.valid(s)}.values())
        return unique, notes

    def initial_population(self, seeds: list[Tensorization]) -> list:
        mu = self.config.population
        pop = [self.individual(s) for s in seeds]
        self.evaluate(pop)
        pop = self.select(pop, mu)
        keys = {ind[0].key for ind in pop}
        tries = 0
        while len(pop) < mu and tries < 50 * mu:
            tries += 1
            shape = self.rng.choice(seeds)
            for _ in range(self.rng.randint(1, 3)):
                shape = mutate(shape, self.rng, self.space)
            if shape.key not in keys:
                keys.add(shape.key)
                pop.append(self.individual(shape))
        self.evaluate(pop)
        return pop

    def step(self, pop: list) -> list:
        offspring = self.breed(pop)
        self.evaluate(offspring)
        return self.survivors(pop, offspring)

    def breed(self, pop: list) -> list:
        """One generation's offspring (fitness still to be computed for the new ones)."""
        return var_or(pop, len(pop), self.config.cxpb, self.config.mutpb, self.rng, self._mate, self._mutate)

    def survivors(self, pop: list, offspring: list) -> list:
        """The next population from parents and scored offspring, each shape once."""
        unique = list({ind[0].key: ind for ind in pop + offspring}.values())
        return self.select(unique, self.config.population)

    def restart(self, pop: list) -> list:
        """A stalled population re-diversified: its best eighth kept, the rest replaced by shapes
        2–5 random moves away from its members (unseen ones where possible)."""
        mu = self.config.population
        elite = pop[:max(1, mu // 8)]
        keys = {ind[0].key for ind in elite}
        fresh, tries = [], 0
        while len(elite) + len(fresh) < mu and tries < 50 * mu:
            tries += 1
            shape = self.rng.choice(pop)[0]
            for _ in range(self.rng.randint(2, 5)):
                shape = mutate(shape, self.rng, self.space)
            if shape.key not in keys and (shape.key not in self.cache or tries > 25 * mu):
                keys.add(shape.key)
                fresh.append(self.individual(shape))
        self.evaluate(fresh)
        return self.select(elite + fresh, mu)

    def polish(self, pop: list, rounds: int) -> list:
        """Steepest descent from the best shape over its one-move neighbourhood."""
        for _ in range(rounds):
            best = pop[0]
            cands = [_individual(s) for s in neighbours(best[0], self.space)]
            self.evaluate(cands)
            unique = list({ind[0].key: ind for ind in pop + cands}.values())
            pop = tools.selBest(unique, self.config.population)
            if pop[0].fitness.values >= best.fitness.values:
                break
        return pop

    def confirm_best(self) -> dict:
        top = self.confirm_candidates()
        return self.best_confirmed(top, self.executor.map(confirm, [(k, self.settings) for k in top]))

    def confirm_candidates(self) -> list[tuple]:
        """The keys of the best few shapes found, to be confirmed in float64."""
        ranked = sorted(self.cache.items(), key=lambda kv: (kv[1]["params"], kv[1]["rel_error"]))
        return [k for k, _ in ranked[: self.config.confirm_top]]

    def best_confirmed(self, keys: list[tuple], confirmed: list[dict]) -> dict:
        """The fewest parameters among the confirmed shapes whose measured error meets ε."""
        ok = [(c["params"], c["rel_error"], k, c) for k, c in zip(keys, confirmed)
              if c["rel_error"] <= self.config.eps]
        if not ok:
            raise ShapesearchError(f"no candidate met ε = {self.config.eps:g} when its error was measured in "
                                   "float64 (rounding at this ε, or data at the edge of float64's range); "
                                   "use a larger ε")
        _, _, key, rec = min(ok, key=lambda x: (x[0], x[1]))
        return {"key": key, **rec}


# settings a resumed run may change; every other one decides what the cache's entries mean
RESUMABLE = ("generations", "stall", "restarts", "time_limit", "polish_rounds", "confirm_top")


def checkpointed_config(directory: Path, **changes) -> SearchConfig:
    """The settings of the run checkpointed in ``directory``, with ``changes`` applied."""
    saved = checkpoint.load(directory).get("config")
    if not isinstance(saved, dict):
        raise ShapesearchError(f"{Path(directory) / checkpoint.CHECKPOINT} has no settings; start a new run")
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    try:
        return SearchConfig(**{**{k: v for k, v in saved.items() if k in known}, **changes})
    except TypeError as exc:
        raise ShapesearchError(f"{Path(directory) / checkpoint.CHECKPOINT} has damaged settings ({exc}); "
                               "start a new run") from exc


def check_resumable(saved: object, config: SearchConfig) -> None:
    """``config`` may continue a run checkpointed with settings ``saved`` (a dict): everything
    but :data:`RESUMABLE` must be equal, or the cache would mix rules."""
    if not isinstance(saved, dict):
        raise ShapesearchError("the checkpoint has no settings; start a new run")
    changed = [f"{k}={saved.get(k)!r} (now {v!r})" for k, v in asdict(config).items()
               if k not in RESUMABLE and saved.get(k) != v]
    if changed:
        raise ShapesearchError(f"the checkpointed run used {', '.join(changed)}; resume with its settings "
                               "or start a new run")


def resume_state(directory: Path, tensor: np.ndarray, config: SearchConfig) -> dict:
    """The checkpoint in ``directory``, after checking that ``config`` may continue it on ``tensor``."""
    state = checkpoint.load(directory)
    if state.get("fingerprint") != checkpoint.fingerprint(tensor):
        raise ShapesearchError("the checkpoint belongs to different data; resume with the same input")
    check_resumable(state.get("config"), config)
    return state


def _restore(engine: _Engine, state: dict) -> tuple[list, list, list, int, int, int, float]:
    """Put a checkpoint's cache, counters and RNG into ``engine``; (population, history,
    surrogate notes, generation, stall count, restarts used, elapsed seconds)."""
    engine.cache = {checkpoint.key_from_json(k): {**v, "params": int(v["params"]), "rel_error": float(v["rel_error"])}
                    for k, v in state["cache"]}
    if len(engine.cache) != len(state["cache"]):
        raise ValueError("the cache log repeats a shape")
    for key, rec in engine.cache.items():  # a cache of another tensor's shapes would fail mid-search
        shape = Tensorization.from_key(key)
        if (shape.original_shape != engine.tensor.shape or not engine.space.valid(shape)
                or "ranks" not in rec or rec["params"] < 1
                or not 0 <= rec["rel_error"] <= engine.config.eps * (1 + 1e-6)):
            raise ValueError(f"cache entry {checkpoint.key_to_json(key)} does not fit this tensor")
    engine.evaluations, engine.cache_hits = int(state["evaluations"]), int(state["cache_hits"])
    pop = [_individual(Tensorization.from_key(checkpoint.key_from_json(k))) for k in state["population"]]
    if not pop:
        raise ValueError("empty population")
    for ind in pop:
        rec = engine.cache[ind[0].key]
        ind.fitness.values = (int(rec["params"]), float(rec["rel_error"]))
    checkpoint.set_rng_state(engine.rng, state["rng"])
    history, surrogate = list(state["history"]), list(state["surrogate"])
    if not all(isinstance(h, dict) for h in history) or not all(isinstance(n, dict) for n in surrogate):
        raise TypeError("history and surrogate notes must be lists of objects")
    return (pop, history, surrogate, int(state["generation"]), int(state["stall"]), int(state.get("restarts", 0)),
            float(state["elapsed"]))


def run_search(tensor: np.ndarray, config: SearchConfig, executor: Executor, *,
               checkpoint_dir: Path | None = None, resume: bool = False,
               on_generation: Callable[[dict], None] | None = None,
               references: dict[str, Tensorization] | None = None) -> SearchResult:
    """Search the tensorization of ``tensor`` with the fewest TT parameters at error ≤ ε.

    ``references``: named shapes that seed the search and are reported next to the winner
    (default: the tensor as it is and ket augmentation)."""
    start = time.perf_counter()
    engine = _Engine(tensor, config, executor, references)
    fp = checkpoint.fingerprint(tensor)
    if resume:
        state = resume_state(checkpoint_dir, tensor, config)
        try:
            pop, history, surrogate, gen, stall, restarts, elapsed0 = _restore(engine, state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ShapesearchError(f"{checkpoint_dir / checkpoint.CHECKPOINT} is not a valid checkpoint "
                                   f"(bad {exc.__class__.__name__}: {exc}); start a new run instead") from exc
        checkpoint.trim_cache_log(checkpoint_dir, len(state["cache"]))
    else:
        seeds, surrogate = engine.seeds()
        pop = engine.initial_population(seeds)
        history, gen, stall, restarts, elapsed0 = [], 0, 0, 0, 0.0

    saved = [len(engine.cache) if resume else 0]  # cache entries already in the log

    def record(phase: str = "ga") -> None:
        best = pop[0].fitness.values
        history.append({"generation": gen, "phase": phase, "best_params": int(best[0]),
                        "best_cr": tensor.size / best[0], "best_error": float(best[1]),
                        "mean_cr": float(np.mean([tensor.size / i.fitness.values[0] for i in pop])),
                        "evaluations": engine.evaluations, "cache_hits": engine.cache_hits,
                        "elapsed": elapsed0 + time.perf_counter() - start})
        if on_generation:
            on_generation(history[-1])
        # the checkpoint holds GA generations only: a resumed run polishes at its own end
        if checkpoint_dir is not None and phase == "ga":
            entries = list(engine.cache.items())
            checkpoint.save(checkpoint_dir, {
                "config": asdict(config), "fingerprint": fp, "generation": gen,
                "population": [checkpoint.key_to_json(i[0].key) for i in pop],
                "cache_entries": len(entries),
                "rng": checkpoint.rng_state(engine.rng), "history": history, "surrogate": surrogate,
                "evaluations": engine.evaluations, "cache_hits": engine.cache_hits,
                "stall": stall, "restarts": restarts, "elapsed": history[-1]["elapsed"]},
                entries[saved[0]:], fresh=saved[0] == 0)
            saved[0] = len(entries)

    if not resume:
        pop = tools.selBest(pop, config.population)
        record()
    last_gen_time = 0.0
    while gen < config.generations and (stall < config.stall or restarts < config.restarts):
        elapsed = elapsed0 + time.perf_counter() - start
        if config.time_limit is not None and elapsed + last_gen_time > config.time_limit:
            break
        t0 = time.perf_counter()
        before = pop[0].fitness.values
        if stall >= config.stall:
            pop, stall, restarts = engine.restart(pop), 0, restarts + 1
        pop = engine.step(pop)
        gen += 1
        stall = stall + 1 if pop[0].fitness.values >= before else 0
        last_gen_time = time.perf_counter() - t0
        record()
    if config.polish_rounds and (config.time_limit is None
                                 or elapsed0 + time.perf_counter() - start < config.time_limit):
        pop = engine.polish(pop, config.polish_rounds)
        record("polish")

    best = engine.confirm_best()
    shape = Tensorization.from_key(best["key"])
    return SearchResult(shape=shape, ranks=tuple(best["ranks"]), params=best["params"],
                        cr=tensor.size / best["params"], rel_error=best["rel_error"],
                        cores=best["cores"], evaluations=engine.evaluations,
                        cache_hits=engine.cache_hits,
                        seconds=elapsed0 + time.perf_counter() - start,
                        history=history, surrogate=surrogate, reference=engine.reference())


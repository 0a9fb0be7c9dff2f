"""Per-layer choices under a parameter budget: a multiple-choice knapsack solved with DEAP.

Each layer offers options (parameters, error energy); pick one per layer so that the
parameters fit ``budget`` and the summed error energy is least.  The GA's genome is the
option index per layer; infeasible genomes are penalised by their excess.  A greedy
solution (cheapest start, then the best energy saved per added parameter) seeds it, and
the winner is polished by exchange moves (one layer up, one down) until none helps.
"""

from __future__ import annotations

import random

from deap import base, tools

from ..engine.evolution import cx_uniform, sel_tournament, var_or
from ..errors import ArgumentError


class BudgetFitness(base.Fitness):
    """Penalised error energy, minimised."""

    weights = (-1.0,)


class BudgetIndividual(list):
    """Option index per layer, with its fitness (as a ``deap.creator`` class would carry it)."""

    def __init__(self, iterable=()) -> None:
        self.fitness = BudgetFitness()
        super().__init__(iterable)


def _greedy(options: list[list[tuple[int, float]]], budget: int) -> list[int]:
    choice = [min(range(len(o)), key=lambda i: (o[i][0], o[i][1])) for o in options]
    used = sum(o[c][0] for o, c in zip(options, choice))
    while True:
        best, gain = None, 0.0
        for layer, o in enumerate(options):
            p0, e0 = o[choice[layer]]
            for i, (p, e) in enumerate(o):
                if e < e0 and used - p0 + p <= budget:
                    g = (e0 - e) / max(p - p0, 1)
                    if g > gain:
                        best, gain = (layer, i), g
        if best is None:
            return choice
        layer, i = best
        used += options[layer][i][0] - options[layer][choice[layer]][0]
        choice[layer] = i


def _polish(options: list[list[tuple[int, float]]], choice: list[int], budget: int) -> list[int]:
    """Best-improvement single and pair changes that stay within the budget."""
    choice = list(choice)
    used = sum(o[c][0] for o, c in zip(options, choice))
    moves = [(layer, i) for layer, o in enumerate(options) for i in range(len(o))]
    while True:
        deltas = [(layer, i, options[layer][i][0] - options[layer][choice[layer]][0],
                   options[layer][i][1] - options[layer][choice[layer]][1])
                  for layer, i in moves if i != choice[layer]]
        best, gain = None, 1e-12
        for a, (la, ia, pa, ea) in enumerate(deltas):
            if used + pa <= budget and -ea > gain:
                best, gain = ((la, ia),), -ea
            for lb, ib, pb, eb in deltas[a + 1:]:
                if lb != la and used + pa + pb <= budget and -(ea + eb) > gain:
                    best, gain = ((la, ia), (lb, ib)), -(ea + eb)
        if best is None:
            return choice
        for layer, i in best:
            used += options[layer][i][0] - options[layer][choice[layer]][0]
            choice[layer] = i


def allocate(options: list[list[tuple[int, float]]], budget: int, seed: int = 0,
             population: int = 60, generations: int = 150) -> list[int]:
    """Option index per layer: Σ params ≤ ``budget`` with the least Σ energy."""
    floor = sum(min(p for p, _ in o) for o in options)
    if floor > budget:
        raise ArgumentError("budget", f"{budget:,} is below the smallest plan ({floor:,} parameters at the largest "
                            "ε of the grid); raise the budget or add a larger ε to the grid")
    rng = random.Random(seed)
    scale = sum(max(e for _, e in o) for o in options) or 1.0

    def fitness(ind) -> tuple[float]:
        params = sum(o[c][0] for o, c in zip(options, ind))
        energy = sum(o[c][1] for o, c in zip(options, ind))
        return (energy + (scale * (1 + (params - budget) / budget) if params > budget else 0.0),)

    def mutate(ind, indpb: float = 0.1):
        for layer in range(len(ind)):
            if rng.random() < indpb:
                ind[layer] = max(0, min(len(options[layer]) - 1, ind[layer] + rng.choice((-1, 1))))
        return (ind,)

    # The GA was DEAP's eaMuPlusLambda, whose operators drew from the global generator seeded
    # with ``seed`` while ``rng`` drove the mutation.  ``deap_rng`` replays those global draws
    # from its own generator, so plans are bit-identical to before and ``random`` is untouched.
    deap_rng = random.Random(seed)
    greedy = _greedy(options, budget)
    pop = [BudgetIndividual(greedy)]
    while len(pop) < population:
        pop.append(BudgetIndividual(mutate(BudgetIndividual(greedy), indpb=0.3)[0]))
    hof = tools.HallOfFame(1)

    def evaluate(individuals: list) -> None:
        for ind in individuals:
            if not ind.fitness.valid:
                ind.fitness.values = fitness(ind)

    evaluate(pop)
    hof.update(pop)
    for _ in range(generations):  # (μ + λ) with μ = λ = population
        offspring = var_or(pop, population, 0.5, 0.5, deap_rng,
                           mate=lambda a, b: cx_uniform(a, b, 0.5, deap_rng), mutate=mutate)
        evaluate(offspring)
        hof.update(offspring)
        pop[:] = sel_tournament(pop + offspring, population, 3, deap_rng)
    best = list(hof[0])
    return _polish(options, best if fitness(best)[0] <= fitness(greedy)[0] else greedy, budget)

"""DEAP's variation and selection steps, drawing from a ``random.Random`` the caller owns.

DEAP's own ``varOr``, ``selTournament`` and ``cxUniform`` draw from the global ``random``
module, so a seeded search would have to seed (and so disturb) the process-wide generator.
These make the same calls in the same order on ``rng`` instead: with a generator seeded like
the global one was, they give bit-identical populations.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TypeVar

from ..errors import ArgumentError

T = TypeVar("T")


def var_or(population: Sequence[T], lambda_: int, cxpb: float, mutpb: float, rng: random.Random,
           mate: Callable[[T, T], tuple[T, T]], mutate: Callable[[T], tuple[T]],
           clone: Callable[[T], T] = copy.deepcopy) -> list[T]:
    """``lambda_`` offspring, each from crossover (probability ``cxpb``), mutation (``mutpb``)
    or reproduction (the rest); as ``deap.algorithms.varOr``.  Offspring of crossover or
    mutation have their fitness invalidated; reproduced ones are the parents themselves."""
    if cxpb + mutpb > 1.0:
        raise ArgumentError("cxpb", f"+ mutpb must be <= 1 (they are probabilities), got {cxpb} + {mutpb}")
    offspring = []
    for _ in range(lambda_):
        op_choice = rng.random()
        if op_choice < cxpb:
            ind1, ind2 = [clone(i) for i in rng.sample(population, 2)]
            ind1, ind2 = mate(ind1, ind2)
            del ind1.fitness.values
            offspring.append(ind1)
        elif op_choice < cxpb + mutpb:
            ind = clone(rng.choice(population))
            ind, = mutate(ind)
            del ind.fitness.values
            offspring.append(ind)
        else:
            offspring.append(rng.choice(population))
    return offspring


def sel_tournament(individuals: Sequence[T], k: int, tournsize: int, rng: random.Random) -> list[T]:
    """``k`` winners of tournaments among ``tournsize`` individuals drawn with replacement
    (the fittest wins); as ``deap.tools.selTournament``."""
    chosen = []
    for _ in range(k):
        aspirants = [rng.choice(individuals) for _ in range(tournsize)]
        chosen.append(max(aspirants, key=attrgetter("fitness")))
    return chosen


def cx_uniform(ind1: list, ind2: list, indpb: float, rng: random.Random) -> tuple[list, list]:
    """Swap each position of two sequences in place with probability ``indpb``; as
    ``deap.tools.cxUniform``."""
    for i in range(min(len(ind1), len(ind2))):
        if rng.random() < indpb:
            ind1[i], ind2[i] = ind2[i], ind1[i]
    return ind1, ind2

"""Variation operators on tensorizations.  Every operator returns a valid tensorization
(or ``None`` when it does not apply), so the GA never needs a repair step."""

from __future__ import annotations

import dataclasses
import random

from .tensorization import AxisSplit, Tensorization, padding_candidates, prime_factors, retarget


class ShapeSpace:
    """What may vary for a tensor of this shape: per-axis padding and the mode grouping.

    ``axis_per_mode`` restricts the grouping: every mode holds digits of one axis only, the
    axes in order (all modes of axis 0, then of axis 1, …), as the plain-TT layer format needs.
    ``whole_axis``: an axis all of whose digits stay in one mode, in their natural order (so
    that mode's index over the axis is the axis' own index, and a matrix acting on that axis
    folds into its core: the activation-aware layer search needs it).
    ``max_pad = 0`` turns padding off.
    """

    def __init__(self, shape: tuple[int, ...], max_pad: float = 0.25, max_prime: int = 7,
                 min_order: int = 2, axis_per_mode: bool = False, whole_axis: int | None = None) -> None:
        self.shape = tuple(shape)
        self.min_order = min_order
        self.axis_per_mode = axis_per_mode
        self.whole_axis = whole_axis
        self.paddings = [padding_candidates(n, max_pad, max_prime) if n >= 4 and max_pad > 0 else (n,)
                         for n in self.shape]

    def axis(self, a: int, padded: int) -> AxisSplit:
        return AxisSplit(self.shape[a], tuple(prime_factors(padded)))

    def smooth_axes(self) -> tuple[AxisSplit, ...]:
        """Each axis padded to its nearest candidate whose primes are all small."""
        return tuple(self.axis(a, p[1] if len(p) > 1 and max(prime_factors(n) or [1]) > 7 else p[0])
                     for a, (n, p) in enumerate(zip(self.shape, self.paddings)))

    def valid(self, t: Tensorization | None) -> bool:
        if t is None or t.order < self.min_order:
            return False
        if self.whole_axis is not None:
            a = self.whole_axis
            if (sum(1 for m in t.modes if m[a]) != 1
                    or t.axes[a].digits != tuple(prime_factors(t.axes[a].padded))):
                return False
        if self.axis_per_mode:
            owners = [next(a for a, c in enumerate(m) if c) for m in t.modes]
            return all(sum(1 for c in m if c) == 1 for m in t.modes) and owners == sorted(owners)
        return True


def _drop_empty(axes, modes, reverse: bool = False) -> Tensorization:
    return Tensorization(axes, tuple(tuple(m) for m in modes if sum(m) > 0), reverse)


# -- moves: each lists every shape one move of its kind away -----------------------------------
def digit_moves(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """One digit across a boundary between neighbouring modes (the finest of its axis going
    down, or the coarsest coming up)."""
    out = []
    for k in range(t.order - 1):
        for src, dst in ((k, k + 1), (k + 1, k)):
            for a, c in enumerate(t.modes[src]):
                if c:
                    modes = [list(m) for m in t.modes]
                    modes[src][a] -= 1
                    modes[dst][a] += 1
                    out.append(_drop_empty(t.axes, modes, t.reverse_sweep))
    return out


def merges(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """Two neighbouring modes merged into one."""
    if t.order <= space.min_order:
        return []
    out = []
    for k in range(t.order - 1):
        merged = tuple(x + y for x, y in zip(t.modes[k], t.modes[k + 1]))
        out.append(dataclasses.replace(t, modes=t.modes[:k] + (merged,) + t.modes[k + 2:]))
    return out


def swaps(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """The digit counts of two neighbouring modes exchanged."""
    return [dataclasses.replace(t, modes=t.modes[:k] + (t.modes[k + 1], t.modes[k]) + t.modes[k + 2:])
            for k in range(t.order - 1) if t.modes[k] != t.modes[k + 1]]


def digit_orders(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """Two neighbouring, different digits of one axis swapped (changes which index is coarse)."""
    out = []
    for a, ax in enumerate(t.axes):
        for i in range(len(ax.digits) - 1):
            if ax.digits[i] != ax.digits[i + 1]:
                d = list(ax.digits)
                d[i], d[i + 1] = d[i + 1], d[i]
                axis = AxisSplit(ax.size, tuple(d))
                out.append(dataclasses.replace(t, axes=t.axes[:a] + (axis,) + t.axes[a + 1:]))
    return out


def paddings(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """One axis moved to the next shorter or longer padded length, its digits regrouped in place."""
    out = []
    for a, cands in enumerate(space.paddings):
        i = cands.index(t.axes[a].padded) if t.axes[a].padded in cands else 0
        for j in (i - 1, i + 1):
            if 0 <= j < len(cands):
                out.append(retarget(t, t.axes[:a] + (space.axis(a, cands[j]),) + t.axes[a + 1:]))
    return out


def sweep_flips(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """The TT-SVD sweeping the other way."""
    return [dataclasses.replace(t, reverse_sweep=not t.reverse_sweep)]


MOVES = (digit_moves, digit_moves, merges, swaps, digit_orders, paddings, sweep_flips)


def split_mode(t: Tensorization, rng: random.Random, space: ShapeSpace) -> Tensorization | None:
    """One mode split into two neighbours, the first keeping the coarser digits (random:
    there are too many splits to list)."""
    big = [k for k, m in enumerate(t.modes) if sum(m) >= 2]
    if not big:
        return None
    k = rng.choice(big)
    m = t.modes[k]
    while True:
        first = [rng.randint(0, c) for c in m]
        if 0 < sum(first) < sum(m):
            break
    second = tuple(c - f for c, f in zip(m, first))
    return dataclasses.replace(t, modes=t.modes[:k] + (tuple(first), second) + t.modes[k + 1:])


def neighbours(t: Tensorization, space: ShapeSpace) -> list[Tensorization]:
    """Every valid shape one listed move away from ``t``."""
    seen, out = {t.key}, []
    for move in dict.fromkeys(MOVES):
        for s in move(t, space):
            if space.valid(s) and s.key not in seen:
                seen.add(s.key)
                out.append(s)
    return out


def mutate(t: Tensorization, rng: random.Random, space: ShapeSpace, tries: int = 20) -> Tensorization:
    """A random move of a random kind that changes ``t`` (``t`` itself if none applies)."""
    for _ in range(tries):
        kind = rng.randrange(len(MOVES) + 1)
        if kind == len(MOVES):
            child = split_mode(t, rng, space)
        else:
            options = MOVES[kind](t, space)
            child = rng.choice(options) if options else None
        if space.valid(child) and child.key != t.key:
            return child
    return t


def _states(t: Tensorization) -> list[tuple[int, ...]]:
    acc = [0] * len(t.axes)
    out = [tuple(acc)]
    for m in t.modes:
        acc = [x + c for x, c in zip(acc, m)]
        out.append(tuple(acc))
    return out


def crossover(p1: Tensorization, p2: Tensorization, rng: random.Random,
              space: ShapeSpace) -> Tensorization:
    """A child with p1's coarse modes up to a cut and p2's fine modes after it; each axis'
    split (padding, digit order) is inherited from either parent."""
    axes = tuple(x if rng.random() < 0.5 else y for x, y in zip(p1.axes, p2.axes))
    a, b = retarget(p1, axes), retarget(p2, axes)
    if a.order < 2:
        return a
    sa, sb = _states(a), _states(b)
    i = rng.randrange(1, a.order)
    cut = sa[i]
    j = next(j for j, s in enumerate(sb) if all(x >= c for x, c in zip(s, cut)))
    bridge = tuple(x - c for x, c in zip(sb[j], cut))
    modes = a.modes[:i] + ((bridge,) if any(bridge) else ()) + b.modes[j:]
    child = Tensorization(axes, modes, rng.choice((p1.reverse_sweep, p2.reverse_sweep)))
    return child if space.valid(child) else a


def random_shape(space: ShapeSpace, rng: random.Random, max_order: int = 12) -> Tensorization:
    """A uniformly drawn padding and digit order per axis and a random grouping into modes."""
    axes = []
    for a, cands in enumerate(space.paddings):
        digits = list(space.axis(a, rng.choice(cands)).digits)
        rng.shuffle(digits)
        axes.append(AxisSplit(space.shape[a], tuple(digits)))
    total = sum(len(x.digits) for x in axes)
    d = rng.randint(min(space.min_order, total), max(min(max_order, total), 1))
    counts = [[0] * len(axes) for _ in range(d)]
    for a, axis in enumerate(axes):
        for k in sorted(rng.randrange(d) for _ in axis.digits):
            counts[k][a] += 1
    return _drop_empty(tuple(axes), counts, rng.random() < 0.5)


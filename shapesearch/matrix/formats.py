"""Shapes of a weight matrix as a TT: the two layer formats and the Saten authors' balanced rule.

A layer W [out, in] is searched as a :class:`Tensorization` of a 2-axis tensor:

* :attr:`Format.TTM` (``"ttm"``, TT-matrix / MPO) tensorizes W [out, in]; mode k holds m_k
  output and n_k input digits (either may be 1), i.e. cores [r, m_k, n_k, r'].
* :attr:`Format.TT` (``"tt"``, format of the Saten code) tensorizes Wᵀ [in, out]; modes hold
  input digits (a_1…a_p) then output digits (b_1…b_q), i.e. cores [r, d_k, r'].

Digits of one axis stay coarse→fine across modes, so the mode sizes are a C-order reshape
of each axis.  :func:`layer_tensor` is the one place that reshape is written: the search
scores it and the layers in ``compressors.tt_linear`` decompose it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from ..engine.tensorization import AxisSplit, Tensorization, prime_factors
from ..errors import ArgumentError


class Format(StrEnum):
    """The TT layout of a weight matrix; the value is what plan and config files hold."""

    TTM = "ttm"  # TT-matrix (MPO) of W [out, in], cores [r, m_k, n_k, r']
    TT = "tt"  # plain TT of Wᵀ [in, out] (the Saten authors' code), cores [r, d_k, r']

    @property
    def axis_per_mode(self) -> bool:
        """Whether each core holds digits of one axis only (the search's constraint for this format)."""
        return self is Format.TT

    @classmethod
    def parse(cls, value: Format | str, argument: str = "format") -> Format:
        """``value`` as a Format; ArgumentError naming ``argument`` if it is none."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(f.value for f in cls)
            raise ArgumentError(argument, f"must be one of {names}, got {value!r}") from None


def matrix_tensor(weight: np.ndarray, fmt: Format | str) -> np.ndarray:
    """The 2-axis tensor a format tensorizes: W [out, in] for ttm, Wᵀ [in, out] for tt (a view)."""
    return weight if Format.parse(fmt) is Format.TTM else weight.T


def layer_tensor(weight: np.ndarray, fmt: Format | str, out_modes: Sequence[int],
                 in_modes: Sequence[int]) -> np.ndarray:
    """The tensor a layer of format ``fmt`` with these modes decomposes (a C-contiguous copy).

    ttm: W [out, in] with mode k = (output digit k, input digit k), sizes m_k·n_k; tt: Wᵀ
    reshaped row-major to (*in_modes, *out_modes)."""
    return shape_from_modes(out_modes, in_modes, fmt).apply(matrix_tensor(weight, fmt))


def _factorizations(n: int, order: int) -> list[tuple[int, ...]]:
    """Every ordered factorization of ``n`` into ``order`` factors ≥ 2."""
    if order == 1:
        return [(n,)] if n >= 2 else []
    out = []
    for f in range(2, n + 1):
        if n % f == 0:
            out += [(f,) + rest for rest in _factorizations(n // f, order - 1)]
    return out


def balanced_factors(n: int, order: int) -> tuple[int, ...]:
    """The ordered factorization with the smallest sum of factors (tensorlearn's rule: ties go
    to the one it enumerates first, the lexicographically largest).  ``order`` drops to the
    number of prime factors when ``n`` has fewer (427 = 7·61 has at most two modes)."""
    order = max(1, min(order, len(prime_factors(n))))
    return min(_factorizations(n, order), key=lambda f: (sum(f), tuple(-x for x in f))) if n > 1 else (1,)


def shape_from_modes(out_modes: Sequence[int], in_modes: Sequence[int], fmt: Format | str,
                     reverse: bool = False) -> Tensorization:
    """The tensorization with these mode sizes (ttm: paired, equal length; tt: any lengths).

    Every mode must be larger than 1 (a ttm mode may pair a 1 with a larger size)."""
    def axis(size: int, factors) -> AxisSplit:
        return AxisSplit(size, tuple(p for f in factors for p in prime_factors(f)))

    fmt = Format.parse(fmt)
    out_modes, in_modes = tuple(map(int, out_modes)), tuple(map(int, in_modes))
    if fmt is Format.TTM:
        if len(out_modes) != len(in_modes):
            raise ValueError(f"a TT-matrix pairs modes: {out_modes} and {in_modes} differ in length")
        axes = (axis(math.prod(out_modes), out_modes), axis(math.prod(in_modes), in_modes))
        modes = tuple((len(prime_factors(m)), len(prime_factors(n))) for m, n in zip(out_modes, in_modes))
    else:
        axes = (axis(math.prod(in_modes), in_modes), axis(math.prod(out_modes), out_modes))
        modes = tuple((len(prime_factors(a)), 0) for a in in_modes) + tuple(
            (0, len(prime_factors(b))) for b in out_modes)
    if any(sum(m) == 0 for m in modes):
        raise ValueError(f"modes {out_modes} × {in_modes}: a {fmt.value} mode of size 1 holds nothing; drop it")
    return Tensorization(axes, modes, reverse)


def modes_of(shape: Tensorization, fmt: Format | str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(out_modes, in_modes) of a tensorization in format ``fmt`` (inverse of shape_from_modes)."""
    sizes = [[math.prod(shape.axes[a].digits[i] for a2, i in mode if a2 == a) for mode in shape.mode_digits]
             for a in (0, 1)]
    if Format.parse(fmt) is Format.TTM:
        return tuple(sizes[0]), tuple(sizes[1])
    ins = tuple(s for s, m in zip(sizes[0], shape.modes) if m[0])
    outs = tuple(s for s, m in zip(sizes[1], shape.modes) if m[1])
    return outs, ins


def balanced_shape(out_features: int, in_features: int, fmt: Format | str, order: int = 2) -> Tensorization:
    """The authors' fixed shape: ``order`` balanced factors per side (ttm pairs them)."""
    outs, ins = balanced_factors(out_features, order), balanced_factors(in_features, order)
    if Format.parse(fmt) is Format.TTM and len(outs) != len(ins):
        d = min(len(outs), len(ins))
        outs, ins = balanced_factors(out_features, d), balanced_factors(in_features, d)
    return shape_from_modes(outs, ins, fmt)


def low_rank_shape(out_features: int, in_features: int, fmt: Format | str) -> Tensorization:
    """The two-core shape that is a rank factorization W = A·B: every input digit in one core,
    every output digit in the other (the reference an activation-aware search starts from)."""
    if Format.parse(fmt) is Format.TTM:
        return shape_from_modes((1, out_features), (in_features, 1), fmt)
    return shape_from_modes((out_features,), (in_features,), fmt)


def input_axis(fmt: Format | str) -> int:
    """The axis of the format's 2-axis tensor that indexes the layer's inputs (ttm: W's columns; tt: Wᵀ's rows)."""
    return 1 if Format.parse(fmt) is Format.TTM else 0


def all_pairings(out_features: int, in_features: int, order: int) -> list[Tensorization]:
    """Every ttm shape with exactly ``order`` modes of factors ≥ 1 (for exhaustive checks on tiny layers)."""
    def with_ones(n: int) -> set[tuple[int, ...]]:
        out = set()
        for k in range(1, order + 1):
            for f in _factorizations(n, k) if n > 1 else [()]:
                for pos in itertools.combinations(range(order), k):
                    t = [1] * order
                    for p, x in zip(pos, f):
                        t[p] = x
                    out.add(tuple(t))
        return out

    shapes = []
    for m in sorted(with_ones(out_features)):
        for n in sorted(with_ones(in_features)):
            if all(a * b > 1 for a, b in zip(m, n)):
                shapes.append(shape_from_modes(m, n, Format.TTM))
    return shapes

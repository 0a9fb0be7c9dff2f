"""Tensorizations: how a tensor with several axes is reshaped into the modes of a TT.

Each axis of length ``size`` may be zero-padded to ``padded`` and is split into prime
*digits* (mixed radix, coarse→fine).  A tensorization is an ordered list of modes; mode k
takes the next ``modes[k][a]`` digits of axis ``a`` for every axis.  Because the counts
only say *how many* digits a mode takes, the digits of one axis always stay coarse→fine
across modes, and every count table whose columns sum to the axes' digit counts is valid.

This covers plain C-order reshapes, ket augmentation (one row and one column digit per
mode) and a colour channel merged into any mode.  ``reverse_sweep`` records the direction
the TT-SVD sweeps the modes in: both meet ε, and they often find different ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import ArgumentError, ShapesearchError


def prime_factors(n: int) -> list[int]:
    """Prime factors of ``n`` in ascending order (empty for 1)."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def padding_candidates(size: int, max_pad: float = 0.25, max_prime: int = 7,
                       limit: int = 8) -> tuple[int, ...]:
    """``size`` itself, then up to ``limit`` nearby larger lengths whose primes are ≤ ``max_prime``."""
    out = [size]
    top = size + max(1, math.floor(size * max_pad))
    for m in range(size + 1, top + 1):
        if len(out) > limit:
            break
        if max(prime_factors(m) or [1]) <= max_prime:
            out.append(m)
    return tuple(out)


def _count(value: object, least: int) -> int:
    """``value`` as an int of at least ``least`` (a JSON integer, not 3.5 or "3" or true)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ShapesearchError(f"expected an integer >= {least}, got {value!r}")
    return value


@dataclass(frozen=True)
class AxisSplit:
    """One axis: original length, padded length and its prime digits coarse→fine."""

    size: int
    digits: tuple[int, ...]

    @property
    def padded(self) -> int:
        return math.prod(self.digits)

    def __post_init__(self) -> None:
        if self.padded < self.size:
            raise ShapesearchError(f"digits {self.digits} cover {self.padded} < axis length {self.size}; "
                                   "give digits whose product is at least the length")


@dataclass(frozen=True)
class Tensorization:
    """An ordered list of TT modes, each a group of digits from any axes."""

    axes: tuple[AxisSplit, ...]
    modes: tuple[tuple[int, ...], ...]
    reverse_sweep: bool = False

    def __post_init__(self) -> None:
        for a, axis in enumerate(self.axes):
            used = sum(m[a] for m in self.modes)
            if used != len(axis.digits):
                raise ShapesearchError(f"axis {a}: modes take {used} digits, axis has {len(axis.digits)}; "
                                       "the modes must take every digit once")
        if any(sum(m) == 0 for m in self.modes) or any(c < 0 for m in self.modes for c in m):
            raise ShapesearchError("every mode needs at least one digit and counts must be >= 0")

    # -- description -------------------------------------------------------------------------
    @property
    def key(self) -> tuple:
        """Canonical hashable encoding (padding is implied by the digits)."""
        return (tuple((a.size, a.digits) for a in self.axes), self.modes, self.reverse_sweep)

    @cached_property
    def mode_digits(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """For each mode, its digits as (axis, position-in-axis) pairs, axis-major."""
        taken = [0] * len(self.axes)
        out = []
        for counts in self.modes:
            mode = []
            for a, c in enumerate(counts):
                mode.extend((a, taken[a] + i) for i in range(c))
                taken[a] += c
            out.append(tuple(mode))
        return tuple(out)

    @cached_property
    def mode_sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(self.axes[a].digits[i] for a, i in m) for m in self.mode_digits)

    @property
    def order(self) -> int:
        return len(self.modes)

    @property
    def original_shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(a.padded for a in self.axes)

    def describe(self) -> str:
        return "×".join(str(n) for n in self.mode_sizes) + (" (←)" if self.reverse_sweep else "")

    def composition(self) -> list[str]:
        """Per mode, which digits of which axis it holds, e.g. ``"a0:2·2 a2:3"``."""
        out = []
        for m in self.mode_digits:
            parts: dict[int, list[int]] = {}
            for a, i in m:
                parts.setdefault(a, []).append(self.axes[a].digits[i])
            out.append(" ".join(f"a{a}:" + "·".join(map(str, d)) for a, d in parts.items()))
        return out

    def to_dict(self) -> dict:
        return {
            "axes": [{"size": a.size, "padded": a.padded, "digits": list(a.digits)} for a in self.axes],
            "modes": [list(m) for m in self.modes],
            "mode_sizes": list(self.mode_sizes),
            "composition": self.composition(),
            "sweep": "right-to-left" if self.reverse_sweep else "left-to-right",
        }

    @classmethod
    def from_dict(cls, d: dict) -> Tensorization:
        """The inverse of :meth:`to_dict`, checking every field (a stored file may be damaged);
        the redundant ``padded`` and ``mode_sizes`` must agree with what they repeat."""
        if not d["axes"] or not d["modes"]:
            raise ShapesearchError("a tensorization needs at least one axis and one mode")
        axes = tuple(AxisSplit(_count(a["size"], 1), tuple(_count(x, 2) for x in a["digits"])) for a in d["axes"])
        if d.get("sweep", "left-to-right") not in ("left-to-right", "right-to-left"):
            raise ShapesearchError(f"sweep must be left-to-right or right-to-left, not {d['sweep']!r}")
        modes = tuple(tuple(_count(c, 0) for c in m) for m in d["modes"])
        if any(len(m) != len(axes) for m in modes):
            raise ShapesearchError(f"every mode needs one digit count per axis ({len(axes)})")
        out = cls(axes, modes, d.get("sweep") == "right-to-left")
        if any("padded" in a and a["padded"] != b.padded for a, b in zip(d["axes"], axes)):
            raise ShapesearchError("an axis's padded length is not the product of its digits")
        if "mode_sizes" in d and list(d["mode_sizes"]) != list(out.mode_sizes):
            raise ShapesearchError(f"mode_sizes {d['mode_sizes']} do not match the digits ({list(out.mode_sizes)})")
        return out

    @classmethod
    def from_key(cls, key: tuple) -> Tensorization:
        axes, modes, reverse = key
        return cls(tuple(AxisSplit(n, tuple(d)) for n, d in axes), tuple(map(tuple, modes)), bool(reverse))

    # -- apply / invert -------------------------------------------------------------------------
    @cached_property
    def _permutation(self) -> tuple[int, ...]:
        offsets = np.cumsum([0] + [len(a.digits) for a in self.axes])
        return tuple(int(offsets[a]) + i for m in self.mode_digits for a, i in m)

    @property
    def _digit_shape(self) -> tuple[int, ...]:
        return tuple(d for a in self.axes for d in a.digits)

    def apply(self, tensor: np.ndarray) -> np.ndarray:
        """Pad with zeros, split into digits, group them into modes (a copy)."""
        if tuple(tensor.shape) != self.original_shape:
            raise ArgumentError("tensor", f"has shape {tuple(tensor.shape)}; this tensorization is for "
                                f"{self.original_shape}")
        pads = [(0, a.padded - a.size) for a in self.axes]
        if any(p for _, p in pads):
            tensor = np.pad(tensor, pads)
        digits = tensor.reshape(self._digit_shape)
        return np.ascontiguousarray(digits.transpose(self._permutation)).reshape(self.mode_sizes)

    def invert(self, modes: np.ndarray) -> np.ndarray:
        """Exact inverse of :meth:`apply` (drops the padding)."""
        shape = self._digit_shape
        perm_shape = tuple(shape[p] for p in self._permutation)
        digits = modes.reshape(perm_shape).transpose(np.argsort(self._permutation))
        full = digits.reshape(self.padded_shape)
        return np.ascontiguousarray(full[tuple(slice(0, a.size) for a in self.axes)])


# -- constructors ------------------------------------------------------------------------------
def natural_axes(shape: tuple[int, ...]) -> tuple[AxisSplit, ...]:
    """Unpadded axes with ascending prime digits."""
    return tuple(AxisSplit(n, tuple(prime_factors(n))) for n in shape)


def original(axes: tuple[AxisSplit, ...]) -> Tensorization:
    """One mode per (non-trivial) axis: the tensor as it is."""
    modes = []
    for a, axis in enumerate(axes):
        if axis.digits:
            modes.append(tuple(len(axis.digits) if b == a else 0 for b in range(len(axes))))
    return Tensorization(axes, tuple(modes))


def interleaved(axes: tuple[AxisSplit, ...], spatial: int | None = None) -> Tensorization:
    """Classic ket augmentation: mode k holds digit k of each of the first ``spatial`` axes;
    the remaining axes (e.g. a colour channel) form the last mode."""
    spatial = len(axes) if spatial is None else spatial
    left = [len(a.digits) for a in axes[:spatial]]
    modes = []
    while any(left):
        modes.append(tuple(1 if b < spatial and left[b] > 0 else 0 for b in range(len(axes))))
        left = [max(0, n - 1) for n in left]
    rest = tuple(0 if b < spatial else len(axes[b].digits) for b in range(len(axes)))
    if any(rest):
        modes.append(rest)
    return Tensorization(axes, tuple(modes))


def from_states(axes: tuple[AxisSplit, ...], states: list[tuple[int, ...]]) -> Tensorization:
    """A tensorization from its chain of cumulative digit counts (a lattice path)."""
    modes = [tuple(b - a for a, b in zip(s, t)) for s, t in zip(states[:-1], states[1:])]
    return Tensorization(axes, tuple(modes))


def retarget(t: Tensorization, axes: tuple[AxisSplit, ...]) -> Tensorization:
    """Move ``t``'s grouping onto new axis splits (other padding or digit order).

    Each new digit goes to the mode whose share of the axis (in log size) covers the
    digit's own log midpoint, so the coarse/fine structure of every axis is kept.
    """
    counts = [[0] * len(axes) for _ in t.modes]
    for a, (old, new) in enumerate(zip(t.axes, axes)):
        if old == new:
            for k, m in enumerate(t.modes):
                counts[k][a] = m[a]
            continue
        bounds, acc, pos = [], 0.0, 0
        total_old = math.log(old.padded) if old.padded > 1 else 1.0
        for m in t.modes:
            acc += sum(math.log(d) for d in old.digits[pos:pos + m[a]])
            pos += m[a]
            bounds.append(acc / total_old)
        total_new = math.log(new.padded) if new.padded > 1 else 1.0
        acc = 0.0
        owners = [k for k, m in enumerate(t.modes) if m[a] > 0] or [0]
        for d in new.digits:
            mid = (acc + math.log(d) / 2) / total_new
            acc += math.log(d)
            k = next((k for k in owners if bounds[k] >= mid), owners[-1])
            counts[k][a] += 1
    modes = tuple(tuple(c) for c in counts if sum(c) > 0)
    return Tensorization(axes, modes, t.reverse_sweep)

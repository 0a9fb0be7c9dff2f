import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shapesearch.engine.operators import ShapeSpace, crossover, mutate, neighbours, random_shape
from shapesearch.engine.tensorization import (
    AxisSplit,
    Tensorization,
    interleaved,
    natural_axes,
    original,
    padding_candidates,
    prime_factors,
    retarget,
)

shapes = st.lists(st.integers(1, 14), min_size=1, max_size=4).filter(lambda s: math.prod(s) >= 4)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10**6))
def test_apply_invert_round_trip(shape, seed):
    rng = np.random.default_rng(seed)
    space = ShapeSpace(tuple(shape))
    import random

    t = random_shape(space, random.Random(seed))
    x = rng.standard_normal(shape)
    y = t.apply(x)
    assert y.shape == t.mode_sizes
    assert math.prod(y.shape) == math.prod(a.padded for a in t.axes)
    np.testing.assert_array_equal(t.invert(y), x)
    # padding is zeros and the original entries are all there
    assert np.isclose(np.linalg.norm(y), np.linalg.norm(x))


def test_known_layouts():
    x = np.arange(512 * 512 * 3, dtype=float).reshape(512, 512, 3)
    axes = natural_axes(x.shape)
    ka = interleaved(axes, 2)
    assert ka.mode_sizes == (4,) * 9 + (3,)
    # KA mode k = k-th most significant row bit with the k-th column bit
    y = ka.apply(x)
    r, c = 0b101000000, 0b011000000
    assert y[2, 1, 3, 0, 0, 0, 0, 0, 0, 1] == x[r, c, 1]
    assert original(axes).apply(x).shape == (512, 512, 3)
    # channel merged into the first (coarsest) mode with 2 row and 3 column bits
    t = Tensorization(axes, ((2, 3, 1), (7, 6, 0)))
    assert t.mode_sizes == (96, 8192)
    assert t.apply(x)[95, 0] == x[384, 448, 2]


def test_canonical_key_is_hashable_and_distinguishes():
    axes = natural_axes((12, 10))
    a = Tensorization(axes, ((1, 1), (2, 1)))
    b = Tensorization(axes, ((1, 1), (2, 1)))
    c = Tensorization(axes, ((2, 1), (1, 1)))
    assert a.key == b.key and hash(a.key) == hash(b.key)
    assert a.key != c.key
    assert Tensorization.from_dict(a.to_dict()) == a


def test_invalid_tensorizations_are_refused():
    axes = natural_axes((12, 10))
    with pytest.raises(ValueError, match="digits"):
        Tensorization(axes, ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="at least one digit"):
        Tensorization(axes, ((3, 2), (0, 0)))
    with pytest.raises(ValueError, match="cover"):
        AxisSplit(10, (3, 3))


def test_padding_candidates_are_smooth_and_near():
    cands = padding_candidates(427)
    assert cands[0] == 427 and 432 in cands
    assert all(max(prime_factors(m)) <= 7 for m in cands[1:])
    assert all(427 < m <= 427 * 1.25 for m in cands[1:])
    assert prime_factors(427) == [7, 61]


def test_retarget_keeps_validity_and_structure():
    space = ShapeSpace((427, 640, 3))
    axes = natural_axes((427, 640, 3))
    t = interleaved(axes, 2)
    new_axes = (space.axis(0, 432),) + axes[1:]
    u = retarget(t, new_axes)
    assert u.axes[0].padded == 432
    assert [m[1:] for m in u.modes if m[1:] != (0, 0)] == [m[1:] for m in t.modes if m[1:] != (0, 0)]


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10**6))
def test_operators_keep_genomes_valid(shape, seed):
    import random

    rng = random.Random(seed)
    space = ShapeSpace(tuple(shape))
    a, b = random_shape(space, rng), random_shape(space, rng)
    for _ in range(10):
        a = mutate(a, rng, space)
        child = crossover(a, b, rng, space)
        for t in (a, child):
            # constructing validates; apply must work on real data
            x = np.ones(shape)
            assert t.invert(t.apply(x)).shape == tuple(shape)


def test_neighbourhood_is_valid_distinct_and_complete():
    space = ShapeSpace((12, 10, 3))
    t = Tensorization(space.smooth_axes(), ((1, 1, 1), (2, 1, 0)))
    near = neighbours(t, space)
    keys = [s.key for s in near]
    assert len(keys) == len(set(keys)) and t.key not in keys
    assert any(s.reverse_sweep for s in near)  # the other sweep direction
    assert any(s.modes != t.modes and s.axes == t.axes for s in near)  # a digit moved across
    assert any(s.axes[0].digits != t.axes[0].digits for s in near)  # a digit order / padding change
    for s in near:
        x = np.arange(360.0).reshape(12, 10, 3)
        np.testing.assert_array_equal(s.invert(s.apply(x)), x)

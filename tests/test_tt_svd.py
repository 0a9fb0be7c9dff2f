import math
import random

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from shapesearch.engine.fitness import EvalSettings, confirm, score
from shapesearch.engine.operators import ShapeSpace, random_shape
from shapesearch.engine.tt_svd import relative_error, tt_params, tt_svd
from shapesearch.errors import ArgumentError

shapes = st.lists(st.integers(1, 9), min_size=2, max_size=4).filter(lambda s: 8 <= math.prod(s) <= 3000)


def _low_rank_plus_noise(shape, rng):
    """Tensors with decaying spectra, so truncation really happens."""
    x = rng.standard_normal(shape)
    core = rng.standard_normal(shape[:1] + (2,)) @ rng.standard_normal((2, math.prod(shape[1:])))
    return core.reshape(shape) + rng.uniform(0.0, 0.5) * x


@settings(max_examples=200, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10**6), eps=st.floats(0.001, 0.9),
       carry=st.booleans(), method=st.sampled_from(["svd", "gram"]), reverse=st.booleans())
def test_error_bound_holds_on_random_tensors_and_shapes(shape, seed, eps, carry, method, reverse):
    rng = np.random.default_rng(seed)
    x = _low_rank_plus_noise(tuple(shape), rng)
    t = random_shape(ShapeSpace(tuple(shape)), random.Random(seed))
    y = t.apply(x)
    tt = tt_svd(y, eps, norm=float(np.linalg.norm(x)), carry_over=carry, method=method, reverse=reverse)
    measured = relative_error(x, t.invert(np.asarray(tt.to_tensor())))
    tol = 1e-10 if method == "svd" else 1e-6  # Gram squares the condition number
    assert measured <= eps + tol
    assert tt.params == tt_params(tt.ranks, t.mode_sizes)
    # the error predicted from the discarded tails is the real one (orthogonal sweep); with
    # padding, the part of the error that falls on the padded zeros is cropped away
    if t.padded_shape == t.original_shape:
        assert measured == pytest.approx(tt.rel_error, abs=1e-6)
    else:
        assert measured <= tt.rel_error + 1e-6


def test_reverse_sweep_is_the_forward_sweep_of_the_mirrored_tensor():
    x = _low_rank_plus_noise((5, 6, 7, 4), np.random.default_rng(4))
    back = tt_svd(x, 0.2, method="svd", reverse=True)
    mirrored = tt_svd(np.ascontiguousarray(x.transpose(3, 2, 1, 0)), 0.2, method="svd")
    assert back.ranks == mirrored.ranks[::-1] and back.params == mirrored.params
    assert [tuple(c.shape) for c in back.cores] == [(1, 5, back.ranks[1]), (back.ranks[1], 6, back.ranks[2]),
                                                   (back.ranks[2], 7, back.ranks[3]), (back.ranks[3], 4, 1)]
    assert relative_error(x, back.to_tensor()) == pytest.approx(back.rel_error, abs=1e-9)


def test_zero_eps_is_exact_and_full_rank():
    x = np.random.default_rng(1).standard_normal((4, 5, 6))
    tt = tt_svd(x, 0.0, method="svd")
    assert tt.ranks == (1, 4, 6, 1)
    assert relative_error(x, tt.to_tensor()) < 1e-12


@pytest.mark.parametrize("reverse", [False, True])
def test_rank_caps_bind_only_where_they_are_lower_and_report_the_error_reached(reverse):
    x = _low_rank_plus_noise((6, 7, 8, 5), np.random.default_rng(5))
    free = tt_svd(x, 0.05, method="svd", reverse=reverse)
    assert tt_svd(x, 0.05, method="svd", reverse=reverse, max_ranks=(1, 99, 99, 99, 1)).ranks == free.ranks
    caps = tuple(max(1, r // 2) for r in free.ranks)
    capped = tt_svd(x, 0.05, method="svd", reverse=reverse, max_ranks=caps)
    assert all(r <= c for r, c in zip(capped.ranks, caps)) and capped.params < free.params
    # the bound no longer holds, and the result says so
    assert capped.rel_error > 0.05
    assert relative_error(x, capped.to_tensor()) == pytest.approx(capped.rel_error, abs=1e-9)
    with pytest.raises(ArgumentError, match="max_ranks"):
        tt_svd(x, 0.05, max_ranks=(1, 2, 1))


def test_carry_over_never_uses_more_parameters_here():
    x = _low_rank_plus_noise((8, 8, 8, 8), np.random.default_rng(3))
    uniform = tt_svd(x, 0.2, carry_over=False, method="svd")
    carried = tt_svd(x, 0.2, carry_over=True, method="svd")
    assert carried.params <= uniform.params
    assert carried.rel_error <= 0.2 and uniform.rel_error <= 0.2
    assert carried.rel_error >= uniform.rel_error  # it spends more of the budget


def test_pytorch_backend_matches_numpy():
    import torch
    x = _low_rank_plus_noise((6, 7, 8), np.random.default_rng(2))
    ref = tt_svd(x, 0.1, method="gram")
    with tl.backend_context("pytorch"):
        for method in ("gram", "svd"):
            tt = tt_svd(torch.tensor(x), 0.1, method=method)
            assert tt.ranks == ref.ranks
            assert isinstance(tt.cores[0], torch.Tensor)
            assert relative_error(torch.tensor(x), tt.to_tensor()) <= 0.1


def test_bad_eps_is_refused():
    with pytest.raises(ValueError, match="eps"):
        tt_svd(np.ones((2, 2)), 1.5)


def test_fast_score_agrees_with_float64_confirmation(image):
    from shapesearch.engine.tensorization import interleaved, natural_axes

    t = interleaved(natural_axes(image.shape), 2)
    settings_ = EvalSettings(0.1).to_dict()
    norm = float(np.linalg.norm(image))
    fast = score(image, norm, (t.key, settings_))
    slow = confirm(image, norm, (t.key, settings_))
    assert fast["ranks"] == slow["ranks"]
    assert slow["rel_error"] <= 0.1
    assert slow["rel_error"] == pytest.approx(fast["rel_error"], rel=1e-3)

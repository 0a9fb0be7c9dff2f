import numpy as np
import pytest

from shapesearch.engine.executors import LocalExecutor
from shapesearch.engine.fitness import EvalSettings, confirm
from shapesearch.engine.surrogate import compute_spectra, shortest_paths, surrogate_seeds
from shapesearch.engine.tensorization import natural_axes

from .conftest import smooth_image


@pytest.mark.parametrize("shape,eps", [((48, 64, 3), 0.1), ((36, 50, 3), 0.05), ((32, 32), 0.2),
                                       ((27, 20, 2), 0.3)])
@pytest.mark.parametrize("carry", [False, True])
def test_surrogate_bound_is_never_below_real_parameters(shape, eps, carry):
    x = smooth_image(*shape[:2], *(shape[2:] or (1,)), seed=len(shape))
    x = x.reshape(shape)
    norm = float(np.linalg.norm(x))
    seeds = surrogate_seeds(LocalExecutor(x, norm), natural_axes(shape), eps, norm)
    assert len(seeds) >= 2
    for s in seeds:
        real = confirm(x, norm, (s.shape.key, EvalSettings(eps, carry_over=carry).to_dict()))
        assert real["params"] <= s.bound_params, s.shape.describe()
        assert real["rel_error"] <= eps


def test_shortest_path_is_optimal_over_enumerated_paths():
    """Brute force over every 3-mode lattice path of a small tensor."""
    import itertools

    shape = (8, 9, 2)
    x = smooth_image(8, 9, 2, seed=4)
    norm = float(np.linalg.norm(x))
    axes = natural_axes(shape)
    spectra = compute_spectra(LocalExecutor(x, norm), axes)
    best = shortest_paths(spectra, axes, 0.1, norm, range(3, 4))[0]
    delta2 = (0.1 * norm) ** 2 / 2

    def rank(state):
        eigs = spectra.get(state)
        if eigs is None:
            return 1
        tails = eigs.sum() - np.cumsum(eigs)
        return int(np.argmax(tails <= delta2)) + 1

    full = tuple(len(a.digits) for a in axes)
    states = list(itertools.product(*(range(n + 1) for n in full)))
    costs = []
    for s1, s2 in itertools.product(states, states):
        chain = [(0, 0, 0), s1, s2, full]
        if all(all(a <= b for a, b in zip(p, q)) and p != q for p, q in zip(chain, chain[1:])):
            size = [int(np.prod([axes[a].digits[i] for a in range(3) for i in range(p[a], q[a])]))
                    for p, q in zip(chain, chain[1:])]
            r = [rank(s) for s in chain]
            costs.append(sum(r[k] * size[k] * r[k + 1] for k in range(3)))
    assert best.bound_params == min(costs)


def test_bound_holds_when_costly_unfoldings_are_skipped(monkeypatch):
    import shapesearch.engine.surrogate as sg

    monkeypatch.setattr(sg, "MAX_GRAM_FLOPS", 48 * 64 * 3 * 12)  # only unfoldings with a side ≤ 12
    x = smooth_image(48, 64, 3, seed=9)
    norm = float(np.linalg.norm(x))
    axes = natural_axes(x.shape)
    spectra = sg.compute_spectra(LocalExecutor(x, norm), axes)
    assert 0 < len(spectra) < len(sg.lattice_states(axes)) - 2
    for s in sg.shortest_paths(spectra, axes, 0.1, norm, range(2, 9)):
        real = confirm(x, norm, (s.shape.key, EvalSettings(0.1).to_dict()))
        assert real["params"] <= s.bound_params

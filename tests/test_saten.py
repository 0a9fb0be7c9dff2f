"""Saten layer, sparse residual and accounting: the invariants of notes §12 (float64, tiny sizes)."""

import math

import pytest
import torch
from torch import nn

from compressors.accounting import dense_params, layer_bytes, layer_params, sparse_index_bytes
from compressors.low_rank import factorize
from compressors.saten import SatenLinear, SparseResidual
from compressors.tt_linear import TTLinear, TTMatrixLinear
from compressors.whitening import activation_error, whitening_factor

OUT, IN = 12, 16
MODES = {"ttm": ((3, 4), (4, 4)), "tt": ((3, 4), (4, 4))}  # (out_modes, in_modes)


def _linear(seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(IN, OUT, bias=bias).double()


def _saten(lin: nn.Linear, fmt: str, eps: float = 0.5, **kw) -> SatenLinear:
    out_modes, in_modes = MODES[fmt]
    return SatenLinear.from_linear(lin, fmt, out_modes, in_modes, eps, **kw)


def _tt_only(lin: nn.Linear, fmt: str, eps: float = 0.5):
    out_modes, in_modes = MODES[fmt]
    if fmt == "ttm":
        return TTMatrixLinear.from_linear(lin, out_modes, in_modes, eps)
    return TTLinear.from_linear(lin, in_modes, out_modes, eps)


def _x(*lead: int) -> torch.Tensor:
    return torch.randn(*lead, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
@pytest.mark.parametrize("eps", [0.3, 1.0])
def test_density_one_recovers_w(fmt, eps):
    lin = _linear()
    layer = _saten(lin, fmt, eps, density=1.0)
    assert layer.residual.nnz == OUT * IN
    assert torch.allclose(layer.weight(), lin.weight, atol=1e-12)
    x = _x(2, 3)
    assert torch.allclose(layer(x), lin(x), atol=1e-12)


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_density_zero_is_the_tt_only_layer(fmt):
    lin = _linear(1)
    layer = _saten(lin, fmt, density=0.0)
    assert layer.residual.nnz == 0
    x = _x(5)
    assert torch.allclose(layer(x), _tt_only(lin, fmt)(x), atol=1e-13)


def test_top_k_keeps_exactly_k_largest_with_ties_to_the_lower_index():
    g = torch.Generator().manual_seed(2)
    e = torch.randn(OUT, IN, dtype=torch.float64, generator=g)
    for density in (0.0, 0.1, 0.33, 0.5, 1.0):
        s = SparseResidual.top_k(e, density)
        k = math.floor(density * e.numel() + 0.5)
        assert s.nnz == k
        assert torch.equal(s.indices, torch.sort(s.indices).values)
        kept = torch.zeros(e.numel(), dtype=torch.bool)
        kept[s.indices] = True
        if 0 < k < e.numel():
            assert e.abs().flatten()[kept].min() >= e.abs().flatten()[~kept].max()
        assert torch.equal(s.values.detach(), e.flatten()[s.indices])
    ties = torch.tensor([[1.0, -2.0, 2.0, 1.0], [2.0, 0.5, -1.0, 1.0]], dtype=torch.float64)
    assert SparseResidual.top_k(ties, 3 / 8).indices.tolist() == [1, 2, 4]
    assert SparseResidual.top_k(ties, 5 / 8).indices.tolist() == [0, 1, 2, 3, 4]


def test_n_m_keeps_n_of_every_m_consecutive_inputs_per_output_row():
    g = torch.Generator().manual_seed(3)
    e = torch.randn(OUT, IN, dtype=torch.float64, generator=g)
    for n_keep, group in ((2, 4), (1, 4), (3, 8), (4, 4)):
        s = SparseResidual.n_m(e, n_keep, group)
        assert s.nnz == OUT * IN * n_keep // group
        mask = s.dense().detach() != 0
        groups = mask.reshape(OUT, IN // group, group)
        assert (groups.sum(-1) == n_keep).all()
        mags = e.abs().reshape(OUT, IN // group, group)
        kept_min = torch.where(groups, mags, torch.inf).amin(-1)
        dropped_max = torch.where(groups, -torch.inf, mags).amax(-1)
        assert (kept_min >= dropped_max).all()
    ties = torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0, -3.0, 0.0, 3.0]], dtype=torch.float64)
    assert SparseResidual.n_m(ties, 2, 4).indices.tolist() == [0, 1, 4, 5]


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_residual_is_taken_from_e_and_its_error_falls_with_density(fmt):
    lin = _linear(4)
    tt_w = _tt_only(lin, fmt).weight().detach()
    errors = []
    for density in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
        layer = _saten(lin, fmt, density=density)
        e = lin.weight.detach() - tt_w
        assert torch.equal(layer.residual.values.detach(), e.flatten()[layer.residual.indices])
        errors.append(torch.linalg.norm(lin.weight - layer.weight()).item())
    assert all(b <= a + 1e-15 for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-12 < errors[0]
    nm = _saten(lin, fmt, nm=(2, 4))
    assert torch.linalg.norm(lin.weight - nm.weight()).item() <= errors[0]


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_params_by_hand_formula_and_bytes_include_indices(fmt):
    lin = _linear(5)
    layer = _saten(lin, fmt, eps=0.3, density=0.2)
    r = layer.tt.ranks
    if fmt == "ttm":
        (mo, mi) = MODES[fmt]
        tt_params = sum(r[k] * mo[k] * mi[k] * r[k + 1] for k in range(2))
    else:
        modes = MODES[fmt][1] + MODES[fmt][0]  # in modes then out modes
        tt_params = sum(r[k] * modes[k] * r[k + 1] for k in range(4))
    nnz = math.floor(0.2 * OUT * IN + 0.5)
    assert layer_params(layer.tt) == tt_params
    assert layer_params(layer) == tt_params + nnz + OUT
    assert dense_params(layer) == OUT * IN + OUT == layer_params(lin)
    assert layer_bytes(layer) == 8 * (tt_params + nnz + OUT) + nnz * 4 + (OUT + 1) * 4
    assert layer_bytes(layer, value_bytes=2) == 2 * (tt_params + nnz + OUT) + nnz * 4 + (OUT + 1) * 4
    assert layer_bytes(lin, value_bytes=2) == 2 * (OUT * IN + OUT)


def test_n_m_bytes_carry_two_bits_per_kept_value_and_saten_2_4_is_at_least_half_dense():
    lin = _linear(6, bias=False)
    layer = _saten(lin, "ttm", eps=0.9, nm=(2, 4))
    nnz = OUT * IN // 2
    assert layer.residual.nnz == nnz and sparse_index_bytes(layer.residual) == nnz // 4
    assert layer_bytes(layer.residual, value_bytes=2) == 2 * nnz + nnz // 4
    assert layer_params(layer) / dense_params(layer) >= 0.5
    empty = SparseResidual.top_k(torch.zeros(OUT, IN), 0.0)
    assert layer_bytes(empty) == 0 and layer_params(empty) == 0
    with pytest.raises(TypeError, match="no accounting"):
        layer_params(nn.ReLU())


@pytest.mark.parametrize("bias", [True, False])
def test_low_rank_accounting_counts_both_factors_against_the_dense_layer(bias):
    lin = _linear(3, bias=bias)
    low = factorize(lin, 5)
    b = OUT if bias else 0
    assert layer_params(low) == 5 * (IN + OUT) + b == sum(p.numel() for p in low.parameters())
    assert dense_params(low) == OUT * IN + b == layer_params(lin)
    assert layer_bytes(low) == 8 * layer_params(low) and layer_bytes(low, value_bytes=2) == 2 * layer_params(low)


@pytest.mark.parametrize("pattern", ["topk", "n:m"])
def test_sparse_forward_equals_dense_masked_matmul(pattern):
    g = torch.Generator().manual_seed(7)
    e = torch.randn(OUT, IN, dtype=torch.float64, generator=g)
    s = SparseResidual.top_k(e, 0.3) if pattern == "topk" else SparseResidual.n_m(e, 2, 4)
    x = _x(2, 5)
    mask = s.dense().detach() != 0
    assert torch.allclose(s(x), x @ (e * mask).T, atol=1e-13)
    s.eval()
    with torch.inference_mode():
        assert torch.allclose(s(x), x @ (e * mask).T, atol=1e-13)


@pytest.mark.parametrize("pattern", ["topk", "n:m"])
def test_gradients_reach_only_the_kept_entries_and_the_mask_never_moves(pattern):
    lin = _linear(8)
    kw = {"density": 0.25} if pattern == "topk" else {"nm": (2, 4)}
    layer = _saten(lin, "ttm", **kw)
    x = _x(6).requires_grad_()
    target = torch.randn(6, OUT, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    loss = (layer(x) - target).square().sum()
    loss.backward()
    # reference: the same loss through a dense S whose gradient is gathered at the mask
    dense_s = layer.residual.dense().detach().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ref = (layer.tt(x_ref) + x_ref @ dense_s.T + layer.bias - target).square().sum()
    ref.backward()
    assert torch.allclose(layer.residual.values.grad, dense_s.grad.flatten()[layer.residual.indices], atol=1e-10)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-10)
    before = layer.residual.indices.clone()
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        (layer(x.detach()) - target).square().sum().backward()
        opt.step()
    assert torch.equal(layer.residual.indices, before)
    assert layer.residual.values.shape == before.shape
    off_mask = torch.ones(OUT * IN, dtype=torch.bool)
    off_mask[before] = False
    assert (layer.residual.dense().detach().flatten()[off_mask] == 0).all()


@pytest.mark.parametrize("fmt,kw", [("ttm", {"density": 0.3}), ("tt", {"nm": (2, 4)}), ("ttm", {"density": 0.0})])
def test_spec_and_state_dict_round_trip_gives_identical_outputs(fmt, kw):
    layer = _saten(_linear(10), fmt, **kw)
    spec = layer.spec()
    fresh = SatenLinear.from_spec(spec, torch.float64)
    assert fresh.spec() == spec
    fresh.load_state_dict(layer.state_dict())
    x = _x(4)
    assert torch.equal(fresh(x), layer(x))
    assert torch.equal(fresh.residual.indices, layer.residual.indices)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(x), layer(x), atol=1e-13)


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
@pytest.mark.parametrize("kw", [{"density": 0.1}, {"nm": (1, 4)}])
def test_alternations_keep_the_parameters_and_never_raise_the_weight_error(fmt, kw):
    lin = _linear(5)
    errors, layers = [], []
    for alternations in range(5):
        layer = _saten(lin, fmt, alternations=alternations, **kw)
        layers.append(layer)
        errors.append(torch.linalg.norm(lin.weight - layer.weight()).item())
        # the residual is E of the TT part it is paired with, at its largest entries
        e = (lin.weight - layer.tt.weight()).detach().flatten()
        assert torch.allclose(layer.residual.values.detach(), e[layer.residual.indices], atol=1e-12)
    assert {(tuple(x.tt.ranks), x.residual.nnz, layer_params(x)) for x in layers} == {
        (tuple(layers[0].tt.ranks), layers[0].residual.nnz, layer_params(layers[0]))}
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.97 * errors[0]  # a random layer at ε 0.5: the refits find a better pair


def test_alternations_lower_the_activation_error_of_a_whitened_layer():
    lin = _linear(6)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(300, IN, dtype=torch.float64, generator=gen) @ torch.randn(IN, IN, dtype=torch.float64,
                                                                              generator=gen)
    moment = x.T @ x / len(x)
    factor = whitening_factor(moment)
    errors, ranks = [], set()
    for alternations in (0, 1, 3):
        layer = SatenLinear.from_linear(lin, "ttm", (OUT, 1), (1, IN), 0.4, density=0.1, factor=factor,
                                        alternations=alternations)
        errors.append(activation_error(lin.weight, layer.weight(), moment))
        ranks.add(tuple(layer.tt.ranks))
    assert len(ranks) == 1
    assert errors[2] <= errors[1] <= errors[0] and errors[2] < errors[0]


def test_float32_layer_keeps_its_dtype_and_matches_its_dense_weight():
    lin = _linear(11).float()
    layer = SatenLinear.from_linear(lin, "ttm", (3, 4), (4, 4), 0.5, density=0.5)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    x = _x(3).float()
    assert torch.allclose(layer(x), x @ layer.weight().T + layer.bias, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    lin = _linear()
    e = torch.randn(OUT, IN)
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\]"):
        SparseResidual.top_k(e, 1.5)
    with pytest.raises(ValueError, match="not a multiple of group"):
        SparseResidual.n_m(torch.randn(OUT, 10), 2, 4)
    with pytest.raises(ValueError, match="0 < n_keep ≤ group"):
        SparseResidual.n_m(e, 5, 4)
    with pytest.raises(ValueError, match="exactly one of density"):
        _saten(lin, "ttm", density=0.1, nm=(2, 4))
    with pytest.raises(ValueError, match="exactly one of density"):
        _saten(lin, "ttm")
    with pytest.raises(ValueError, match="format must be"):
        SatenLinear.from_linear(lin, "cp", (3, 4), (4, 4), 0.5, density=0.1)
    for bad in (-1, 1.5, True, 11):
        with pytest.raises(ValueError, match=r"alternations must be an integer in \[0, 10\]"):
            _saten(lin, "ttm", density=0.1, alternations=bad)
    with pytest.raises(ValueError, match="no bias"):
        SatenLinear(_tt_only(lin, "ttm"), SparseResidual.top_k(e.double(), 0.1))
    with pytest.raises(ValueError, match="ascending"):
        SparseResidual(torch.tensor([3, 1]), torch.zeros(2), (OUT, IN))

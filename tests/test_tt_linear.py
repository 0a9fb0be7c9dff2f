import copy
import math

import numpy as np
import pytest
import tensorly as tl
import torch
from torch import nn

from compressors.tt_linear import ContractionPlan, TTLinear, TTMatrixLinear
from shapesearch.engine.tt_svd import tt_svd
from shapesearch.matrix.formats import Format, layer_tensor


@pytest.mark.parametrize("out_modes,in_modes", [((4, 6), (3, 8)), ((2, 3, 4), (4, 2, 3)), ((24,), (24,))])
def test_full_rank_tt_matrix_reconstructs_exactly_and_runs_factored(out_modes, in_modes):
    torch.manual_seed(0)
    m, n = torch.tensor(out_modes).prod().item(), torch.tensor(in_modes).prod().item()
    dense = nn.Linear(n, m).double()
    tt = TTMatrixLinear.from_linear(dense, out_modes, in_modes, eps=0.0)
    assert torch.allclose(tt.weight(), dense.weight, atol=1e-12)
    x = torch.randn(5, 7, n, dtype=torch.float64)
    assert torch.allclose(tt(x), dense(x), atol=1e-10)


def test_truncated_tt_matrix_meets_eps_and_forward_equals_its_dense_product():
    torch.manual_seed(1)
    dense = nn.Linear(64, 48, bias=False).double()
    tt = TTMatrixLinear.from_linear(dense, (4, 4, 3), (4, 4, 4), eps=0.5)
    w = tt.weight()
    assert torch.linalg.norm(w - dense.weight) <= 0.5 * torch.linalg.norm(dense.weight) + 1e-12
    params = sum(p.numel() for p in tt.parameters())
    assert params < 48 * 64
    x = torch.randn(9, 64, dtype=torch.float64)
    assert torch.allclose(tt(x), x @ w.T, atol=1e-10)


def test_modes_that_do_not_factor_the_weight_are_refused():
    dense = nn.Linear(10, 12)
    with pytest.raises(ValueError, match="do not factor"):
        TTMatrixLinear.from_linear(dense, (3, 5), (2, 5), eps=0.1)
    with pytest.raises(ValueError, match="as many output as input modes"):
        TTMatrixLinear.from_linear(dense, (3, 4), (10,), eps=0.1)


# ---- format B planner, format A, invariants of notes §12 -------------------------------------

def _decaying_linear(out_f: int, in_f: int, seed: int = 0, bias: bool = True) -> nn.Linear:
    """A float64 layer whose spectrum decays (as trained weights do), so ε changes the ranks."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out_f, out_f, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_f, in_f, generator=g, dtype=torch.float64))
    k = min(out_f, in_f)
    s = torch.exp(-torch.arange(k, dtype=torch.float64) / 6) + 0.01 * torch.rand(k, generator=g, dtype=torch.float64)
    lin = nn.Linear(in_f, out_f, bias=bias).double()
    with torch.no_grad():
        lin.weight.copy_(u[:, :k] @ torch.diag(s) @ v[:, :k].T + 0.01 * torch.randn(out_f, in_f, generator=g,
                                                                                     dtype=torch.float64))
    return lin


def _ttm_params(out_modes, in_modes, ranks) -> int:
    return sum(ranks[k] * out_modes[k] * in_modes[k] * ranks[k + 1] for k in range(len(out_modes)))


def test_format_b_full_rank_64x64_has_ranks_1_8_32_1_and_is_exact():
    lin = _decaying_linear(64, 64, seed=3)
    tt = TTMatrixLinear.from_linear(lin, (4, 4, 4), (2, 4, 8), eps=0.0)
    assert tt.ranks == (1, 8, 32, 1)
    assert torch.allclose(tt.weight(), lin.weight, atol=1e-12)


def test_format_a_full_rank_is_exact_and_boundary_rank_is_the_matrix_rank():
    torch.manual_seed(0)
    lin = nn.Linear(32, 48).double()
    tt = TTLinear.from_linear(lin, (4, 8), (6, 8), eps=0.0)
    assert tt.ranks[tt.in_order] == 32 == min(32, 48)
    assert torch.allclose(tt.weight(), lin.weight, atol=1e-12)
    x = torch.randn(3, 4, 32, dtype=torch.float64)
    assert torch.allclose(tt(x), lin(x), atol=1e-11)


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_error_bound_and_monotone_params_over_eps(fmt):
    lin = _decaying_linear(24, 32, seed=1)
    errors, params = [], []
    for eps in (1.0, 0.6, 0.3, 0.1):  # decreasing ε
        tt = (TTMatrixLinear.from_linear(lin, (2, 3, 4), (4, 2, 4), eps) if fmt == "ttm"
              else TTLinear.from_linear(lin, (4, 8), (6, 4), eps))
        err = torch.linalg.norm(tt.weight() - lin.weight).item()
        assert err <= eps * torch.linalg.norm(lin.weight).item() + 1e-12
        errors.append(err)
        params.append(sum(c.numel() for c in tt.cores))
    assert errors == sorted(errors, reverse=True) and params == sorted(params)
    assert params[0] < params[-1]


def test_format_a_ranks_obey_the_unfolding_bounds():
    torch.manual_seed(2)
    lin = nn.Linear(24, 40, bias=False).double()
    tt = TTLinear.from_linear(lin, (2, 3, 4), (5, 8), eps=0.0)
    modes = tt.in_modes + tt.out_modes
    for k in range(1, len(modes)):
        assert tt.ranks[k] <= min(math.prod(modes[:k]), math.prod(modes[k:]))
    assert tt.boundary_rank <= min(24, 40)


def test_identity_and_kronecker_products_have_tt_matrix_rank_one():
    eye = nn.Linear(64, 64, bias=False).double()
    with torch.no_grad():
        eye.weight.copy_(torch.eye(64, dtype=torch.float64))
    # ε = 0 keeps rounding-level singular values; tt_svd's tails (‖A‖² − kept) resolve ε ≳ 1e-8
    tt = TTMatrixLinear.from_linear(eye, (4, 4, 4), (4, 4, 4), eps=1e-6)
    assert tt.ranks == (1, 1, 1, 1)
    assert torch.allclose(tt.weight(), eye.weight, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64))
    kron = nn.Linear(8, 15, bias=False).double()
    with torch.no_grad():
        kron.weight.copy_(torch.kron(a, b))
    assert TTMatrixLinear.from_linear(kron, (3, 5), (4, 2), eps=1e-6).ranks == (1, 1, 1)


def test_reverse_sweep_gives_the_ranks_of_tt_svd_reverse():
    lin = _decaying_linear(24, 32, seed=4)
    for reverse in (False, True):
        tt = TTMatrixLinear.from_linear(lin, (2, 3, 4), (4, 2, 4), 0.2, reverse=reverse)
        tensor = layer_tensor(lin.weight.detach().numpy(), Format.TTM, (2, 3, 4), (4, 2, 4))
        with tl.backend_context("numpy"):
            assert tt.ranks == tt_svd(tensor, 0.2, method="svd", reverse=reverse).ranks
        a = TTLinear.from_linear(lin, (4, 8), (6, 4), 0.2, reverse=reverse)
        tensor = np.ascontiguousarray(lin.weight.detach().numpy().T.reshape(4, 8, 6, 4))
        with tl.backend_context("numpy"):
            assert a.ranks == tt_svd(tensor, 0.2, method="svd", reverse=reverse).ranks


PLAN_CASES = [((2, 3, 4), (4, 2, 4), 0.2), ((4, 1, 3), (1, 8, 2), 0.1), ((6, 1), (1, 8), 0.3),
              ((2, 3, 2, 2), (2, 2, 2, 4), 0.15)]


@pytest.mark.parametrize("out_modes,in_modes,eps", PLAN_CASES)
def test_every_contraction_plan_equals_the_dense_product_with_equal_gradients(out_modes, in_modes, eps):
    lin = _decaying_linear(math.prod(out_modes), math.prod(in_modes), seed=5)
    tt = TTMatrixLinear.from_linear(lin, out_modes, in_modes, eps)
    x = torch.randn(2, 3, lin.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = tt.weight()
    ref = x @ w.T + tt.bias
    ref_grads = torch.autograd.grad(ref.square().sum(), list(tt.cores))
    plans = tt.candidate_plans()
    d = len(out_modes)
    assert len(plans) == 2 ** d - 2  # every grouping but all-in-one, × both directions
    # the dense reconstruction (all cores in one block) is never chosen but must work when forced
    for plan in [p for p, _, _ in plans] + [ContractionPlan((d,), "ltr")]:
        tt.set_plan(plan)
        y = tt(x)
        assert torch.allclose(y, ref, atol=1e-10), plan
        grads = torch.autograd.grad(y.square().sum(), list(tt.cores))
        assert all(torch.allclose(g, r, atol=1e-8) for g, r in zip(grads, ref_grads)), plan
        tt.eval()
        with torch.no_grad():  # cached matrices
            assert torch.allclose(tt(x), ref, atol=1e-10) and torch.allclose(tt(x), ref, atol=1e-10)
        tt.train()


def test_planner_picks_the_cheapest_plan_and_counts_the_notes_formula():
    torch.manual_seed(0)
    cores = [torch.randn(1, 4, 2, 3, dtype=torch.float64), torch.randn(3, 5, 6, 2, dtype=torch.float64),
             torch.randn(2, 3, 7, 1, dtype=torch.float64)]
    tt = TTMatrixLinear(cores)
    (m1, m2, m3), (n1, n2, n3), r = (4, 5, 3), (2, 6, 7), (1, 3, 2, 1)
    macs = dict((str(p), s) for p, s, _ in tt.candidate_plans())
    # notes §2 format B: Σ_k (Π_{l<k} m_l)(Π_{l>k} n_l) r_{k-1} n_k m_k r_k
    assert macs["ltr(1+1+1)"] == n2 * n3 * r[0] * n1 * m1 * r[1] + m1 * n3 * r[1] * n2 * m2 * r[2] \
        + m1 * m2 * r[2] * n3 * m3 * r[3]
    # right to left: Σ_k (Π_{l<k} n_l)(Π_{l>k} m_l) r_{k-1} n_k m_k r_k
    assert macs["rtl(1+1+1)"] == n1 * n2 * r[2] * n3 * m3 * r[3] + n1 * m3 * r[1] * n2 * m2 * r[2] \
        + m2 * m3 * r[0] * n1 * m1 * r[1]
    assert "ltr(3)" not in macs and len(macs) == 6
    cost = {str(p): s + g / tt.plan_tokens for p, s, g in tt.candidate_plans()}
    assert cost[str(tt.plan)] == min(cost.values())
    assert tt.macs_per_token == macs[str(tt.plan)]


def test_rank_r_factorization_modes_run_as_two_gemms_with_r_times_m_plus_n_macs():
    lin = _decaying_linear(12, 16, seed=6)
    tt = TTMatrixLinear.from_linear(lin, (12, 1), (1, 16), eps=0.5)
    r = tt.ranks[1]
    assert r * (12 + 16) < 12 * 16 and tt.plan == ContractionPlan((1, 1), "rtl")
    assert tt.macs_per_token == r * (12 + 16)
    x = torch.randn(5, 16, dtype=torch.float64)
    assert torch.allclose(tt(x), x @ tt.weight().T + tt.bias, atol=1e-12)


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_eval_cache_follows_parameter_updates(fmt):
    lin = _decaying_linear(12, 16, seed=7)
    tt = (TTMatrixLinear.from_linear(lin, (3, 4), (4, 4), 0.2) if fmt == "ttm"
          else TTLinear.from_linear(lin, (4, 4), (3, 4), 0.2))
    x = torch.randn(4, 16, dtype=torch.float64)
    tt.eval()
    with torch.no_grad():
        y0 = tt(x)
        tt.cores[0].mul_(2.0)  # in-place update bumps the version counter
        assert torch.allclose(tt(x), 2 * (y0 - tt.bias) + tt.bias, atol=1e-12)
    tt.train()
    opt = torch.optim.SGD(tt.parameters(), lr=0.1)
    tt(x).square().sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in tt.cores)
    opt.step()
    tt.eval()
    with torch.no_grad():
        assert torch.allclose(tt(x), x @ tt.weight().T + tt.bias, atol=1e-12)
    with torch.inference_mode():
        y = tt(x)
    twin = copy.deepcopy(tt)  # the cache (inference tensors) is not copied, the cores are
    assert twin._derived.key is None
    with torch.inference_mode():
        assert torch.equal(twin(x), y)


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_balance_equalizes_core_norms_and_keeps_the_function(fmt):
    lin = _decaying_linear(12, 16, seed=3)
    with torch.no_grad():
        lin.weight.mul_(20.0)  # ‖W‖_F well above the √rank of an orthonormal core
    tt = (TTMatrixLinear.from_linear(lin, (3, 2, 2), (2, 4, 2), 0.1) if fmt == "ttm"
          else TTLinear.from_linear(lin, (2, 2, 4), (3, 4), 0.1))
    x = torch.randn(4, 16, dtype=torch.float64)
    tt.eval()
    before, norms = tt(x), [float(c.detach().norm()) for c in tt.cores]
    assert max(norms) / min(norms) > 2  # TT-SVD: orthonormal cores and one holding the norm
    tt.balance_()
    after = [float(c.detach().norm()) for c in tt.cores]
    assert max(after) / min(after) == pytest.approx(1.0, rel=1e-9)
    assert math.prod(after) == pytest.approx(math.prod(norms), rel=1e-9)
    assert torch.allclose(tt(x), before, rtol=1e-10, atol=1e-12)  # the eval cache followed the rescale


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_spec_and_state_dict_round_trip(fmt):
    lin = _decaying_linear(12, 16, seed=8)
    tt = (TTMatrixLinear.from_linear(lin, (3, 4), (4, 4), 0.2) if fmt == "ttm"
          else TTLinear.from_linear(lin, (4, 4), (3, 4), 0.2))
    cls = type(tt)
    spec = tt.spec()
    assert spec["format"] == fmt and spec["ranks"] == list(tt.ranks)
    fresh = cls.from_spec(spec, torch.float64)
    fresh.load_state_dict(tt.state_dict())
    x = torch.randn(3, 16, dtype=torch.float64)
    assert torch.equal(fresh(x), tt(x))
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(x), tt(x), atol=1e-13)


def test_format_a_macs_and_params_by_hand():
    torch.manual_seed(3)
    tt = TTLinear.from_linear(nn.Linear(24, 40).double(), (4, 6), (5, 8), eps=0.3)
    r = tt.ranks
    modes = (4, 6, 5, 8)
    assert sum(c.numel() for c in tt.cores) == sum(r[k] * modes[k] * r[k + 1] for k in range(4))
    assert tt.macs_per_token == r[2] * (24 + 40)
    a, b = tt.factors()
    assert a.shape == (24, r[2]) and b.shape == (r[2], 40)


def test_bad_inputs_raise_clear_errors():
    lin = nn.Linear(12, 16)
    with pytest.raises(ValueError, match="eps"):
        TTMatrixLinear.from_linear(lin, (4, 4), (3, 4), eps=-0.1)
    with pytest.raises(ValueError, match="do not factor"):
        TTLinear.from_linear(lin, (5, 3), (4, 4), eps=0.1)
    with pytest.raises(ValueError, match="expected 'ttm'"):
        TTMatrixLinear.from_spec({"format": "tt"}, torch.float32)
    with pytest.raises(ValueError, match="boundary"):
        TTMatrixLinear([torch.zeros(2, 3, 4, 1)])
    tt = TTMatrixLinear.from_linear(lin, (4, 4), (3, 4), eps=0.1)
    with pytest.raises(ValueError, match="features"):
        tt(torch.zeros(2, 13))
    with pytest.raises(ValueError, match="groups"):
        tt.set_plan(ContractionPlan((1, 1, 1), "ltr"))

import pytest
import torch
from torch import nn

from compressors.tt_linear import TTMatrixLinear


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

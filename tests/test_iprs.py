import math

import pytest
import torch

from compressors.iprs import allocate, layer_importance, mean_keep_ratio

# Llama-2-7B raw importance sums from the authors' rank files (notes §7)
BI = [148489.0, 121886.0, 93112.5, 93830.5, 93834.5, 93976.5, 93351.5, 92923.0, 90483.0, 87454.5,
      85436.0, 80777.0, 79506.5, 79241.0, 77794.0, 78191.0, 77990.0, 70088.0, 65261.5, 60084.0,
      60224.75, 52509.75, 51693.0, 47056.25, 45299.75, 46564.0, 44854.75, 42858.25, 45211.5, 46314.0,
      57957.0, 131935.5]
W20 = [1.0, 1.0, 0.97641, 0.98394, 0.98398, 0.98547, 0.97892, 0.97442, 0.94884, 0.91708,
       0.89591, 0.84706, 0.83373, 0.83095, 0.81577, 0.81994, 0.81783, 0.73497, 0.68435, 0.63006,
       0.63154, 0.55064, 0.54207, 0.49345, 0.47503, 0.48829, 0.47036, 0.44943, 0.4741, 0.48566,
       0.60776, 1.0]
RANKS20 = [128, 128, 124, 125, 125, 126, 125, 124, 121, 117, 114, 108, 106, 106, 104, 104,
           104, 94, 87, 80, 80, 70, 69, 63, 60, 62, 60, 57, 60, 62, 77, 128]
LLAMA2_7B = dict(hidden=4096, heads=32, kv_heads=32, head_dim=128, intermediate=11008)
MISTRAL_7B = dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336)


def test_golden_llama2_7b_at_20_percent():
    rbar = mean_keep_ratio(0.2, **LLAMA2_7B)
    assert rbar == pytest.approx(0.760248447, abs=1e-9)
    w = allocate([b / (4096 * 128) for b in BI], rbar)
    assert w == pytest.approx(W20, abs=1e-5)
    assert [math.floor(128 * x) for x in w] == RANKS20
    assert sum(w) == pytest.approx(32 * rbar, abs=1e-9)


def test_golden_llama2_7b_at_50_percent():
    w = allocate(BI, mean_keep_ratio(0.5, **LLAMA2_7B))  # scale-invariant in t
    assert w[0] == pytest.approx(0.78139, abs=1e-5) and w[1] == pytest.approx(0.6414, abs=1e-4)
    assert w[31] == pytest.approx(0.69428, abs=1e-5)
    assert min(w) == pytest.approx(0.22553, abs=1e-5) and w.index(min(w)) == 27


@pytest.mark.parametrize("s,expected", [(0.1, 0.8801), (0.2, 0.7602), (0.3, 0.6404), (0.5, 0.4006)])
def test_ratio_map_llama2(s, expected):
    assert mean_keep_ratio(s, **LLAMA2_7B) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("s,expected", [(0.1, 0.8894), (0.2, 0.7787), (0.5, 0.4468)])
def test_ratio_map_gqa(s, expected):
    assert mean_keep_ratio(s, **MISTRAL_7B) == pytest.approx(expected, abs=1e-4)


def test_allocation_properties():
    t = [0.3, 0.05, 0.1, 0.2, 0.02]
    w = allocate(t, 0.6)
    assert all(0 < x <= 1 for x in w) and sum(w) == pytest.approx(3.0)
    free = [i for i, x in enumerate(w) if x < 1]
    ratios = {round(w[i] / t[i], 9) for i in free}
    assert len(ratios) == 1
    assert allocate([1.0] * 4, 0.5) == [0.5] * 4
    assert allocate(t, 1.2) == [1.0] * 5


def test_importance_range_and_identity():
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    s, n = layer_importance(x, x)
    assert s == pytest.approx(0.0, abs=1e-6) and n == 14
    s, n = layer_importance(x, -x)  # clamped to cos 0 → 0.5 per token
    assert s / n == pytest.approx(0.5)
    s, n = layer_importance(x, torch.randn(2, 7, 16, dtype=torch.float64))
    assert 0 <= s / n <= 0.5

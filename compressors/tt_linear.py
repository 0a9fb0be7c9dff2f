"""Linear layers stored and run as tensor trains, in the two layouts of the Saten notes (§2).

* :class:`TTMatrixLinear` (format B, ``Format.TTM``, TT-matrix / MPO): W [M, N] with
  M = Π m_k, N = Π n_k, cores [r_{k-1}, m_k, n_k, r_k]; W is reshaped to (m_1 n_1, …, m_d n_d)
  (digit k of the output paired with digit k of the input, coarse→fine) and decomposed by the
  error-bounded TT-SVD.  The forward never rebuilds W: it contracts the input with the cores along a
  contraction plan chosen once per core shape by counting multiply-adds (see ``candidate_plans``).
* :class:`TTLinear` (format A, ``Format.TT``, the Saten authors' code): plain TT of Wᵀ [N_in, N_out] reshaped
  row-major to (a_1…a_p, b_1…b_q), cores [r_{k-1}, d_k, r_k].  The boundary rank r_p is a
  matrix rank, Wᵀ = A·B with A [N_in, r_p], B [r_p, N_out], and the forward is (x·A)·B + b.

Both decompose the tensor ``shapesearch.matrix.formats.layer_tensor`` builds, the one the
shape search scored.  Both cache the tensors they derive from the cores (merged blocks, A and B) while in eval mode
with no gradient wanted, keyed on the cores' storage and version counters; in-place edits made
through ``.data`` bypass the version counter, so call ``clear_cache()`` after those.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import tensorly as tl
import torch
from torch import nn

from shapesearch.engine.tt_svd import TTResult, tt_svd
from shapesearch.matrix.formats import Format, layer_tensor


def eps_tt_svd(tensor: np.ndarray, eps: float, reverse: bool = False, method: str = "svd",
               max_ranks: Sequence[int] | None = None) -> TTResult:
    """ε-TT-SVD on the numpy backend (carry-over on) with ‖T − T̂‖_F ≤ ε‖T‖_F (ranks capped at
    ``max_ranks`` if given: ``tt_svd``'s rule).

    The layers use ``method="svd"`` (``"gram"`` is the faster search-time variant).  ``tt_svd``
    accepts ε < 1 only; for ε ≥ 1 (the Saten 2:4 release uses ε = 1) the same tail budget
    (ε‖T‖)² is passed as ε' = 1/2 against the reference norm 2ε‖T‖."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number ≥ 0 (relative Frobenius error), got {eps!r}") from None
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number ≥ 0 (relative Frobenius error), got {eps!r}")
    with tl.backend_context("numpy"):
        if eps < 1.0:
            return tt_svd(tensor, eps, method=method, reverse=reverse, max_ranks=max_ranks)
        ref = 2.0 * eps * float(np.linalg.norm(tensor))
        return tt_svd(tensor, 0.5, norm=ref, method=method, reverse=reverse, max_ranks=max_ranks)


def _check_modes(name: str, modes: Sequence[int], size: int) -> tuple[int, ...]:
    modes = tuple(int(m) for m in modes)
    if not modes or any(m < 1 for m in modes):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {modes}")
    if math.prod(modes) != size:
        raise ValueError(f"{name} {modes} do not factor {size} (their product is {math.prod(modes)})")
    return modes


class _DerivedCache:
    """Tensors derived from parameters, reused while those parameters are unchanged.

    Used only in eval mode with no gradient wanted (the training forward always recomputes, so
    gradients reach the cores).  The key holds each parameter's identity, storage, dtype and
    version counter: optimizer steps, ``load_state_dict`` and ``.to()`` all invalidate it."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value = None

    @staticmethod
    def usable(module: nn.Module, params) -> bool:
        return not module.training and not (torch.is_grad_enabled() and any(p.requires_grad for p in params))

    def get(self, params, extra, build):
        key = (tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in params), extra)
        if key != self.key:
            self.key, self.value = None, None  # drop the stale tensors before building the new ones
            self.value = build()
            self.key = key
        return self.value

    def clear(self) -> None:
        self.key, self.value = None, None


class _CachedModule(nn.Module):
    """Clears its derived-tensor cache on ``train()``/``eval()`` and on dtype/device moves."""

    def __init__(self) -> None:
        super().__init__()
        self._derived = _DerivedCache()

    def clear_cache(self) -> None:
        """Forget cached derived tensors (needed only after in-place edits through ``.data``)."""
        self._derived.clear()

    def train(self, mode: bool = True) -> _CachedModule:
        self._derived.clear()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self._derived.clear()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        # deepcopy/pickle: derived tensors are not state (and may be inference tensors)
        state = super().__getstate__()
        return {**state, "_derived": _DerivedCache()}


class _TTLayer(_CachedModule):
    """What both layouts share: construction by ε-TT-SVD of the format's layer tensor, the
    spec round trip, and the ranks.  A subclass says how its cores are shaped."""

    format: ClassVar[Format]
    cores: nn.ParameterList
    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]
    bias: nn.Parameter | None

    @staticmethod
    def _check_chain(cores: list[torch.Tensor], layout: str) -> None:
        """Cores shaped ``layout`` whose ranks chain from 1 to 1."""
        ndim = len(layout.split(","))
        for k, c in enumerate(cores):
            if c.dim() != ndim:
                raise ValueError(f"core {k} must be {ndim}-D {layout}, got shape {tuple(c.shape)}")
            if k and c.shape[0] != cores[k - 1].shape[-1]:
                raise ValueError(f"core {k} has left rank {c.shape[0]} but core {k - 1} has right rank "
                                 f"{cores[k - 1].shape[-1]}")
        if cores[0].shape[0] != 1 or cores[-1].shape[-1] != 1:
            raise ValueError("the boundary ranks r_0 and r_d must be 1")

    def _hold(self, cores: list[torch.Tensor], bias: torch.Tensor | None) -> None:
        """Cores and bias (checked against ``out_features``) as parameters."""
        if bias is not None and bias.shape != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self.cores = nn.ParameterList(nn.Parameter(c) for c in cores)
        self.bias = None if bias is None else nn.Parameter(bias)

    @torch.no_grad()
    def balance_(self) -> None:
        """Rescale the cores in place to equal Frobenius norms; the layer's function is unchanged
        (the scales multiply to 1).  TT-SVD leaves every core orthonormal but one, which holds
        the whole norm; an optimizer whose step is about the same size on every entry (Adam)
        then moves the small cores much more, relative to their size, than the large one."""
        norms = torch.stack([c.double().norm() for c in self.cores])
        if len(norms) < 2 or not bool((norms > 0).all()):
            return
        target = norms.log().mean().exp()
        for core, norm in zip(self.cores, norms):
            core.mul_((target / norm).to(core.dtype))

    @classmethod
    def _core_modes(cls, out_modes: tuple[int, ...], in_modes: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The non-rank sizes of each core."""
        raise NotImplementedError

    @classmethod
    def _assemble(cls, cores: list[torch.Tensor], in_order: int, bias: torch.Tensor | None) -> _TTLayer:
        raise NotImplementedError

    @classmethod
    def _core_shapes(cls, out_modes: tuple[int, ...], in_modes: tuple[int, ...],
                     ranks: Sequence[int]) -> list[tuple[int, ...]]:
        modes = cls._core_modes(out_modes, in_modes)
        if len(ranks) != len(modes) + 1:
            raise ValueError(f"{len(modes)} cores need {len(modes) + 1} ranks, got {list(ranks)}")
        return [(int(ranks[k]), *modes[k], int(ranks[k + 1])) for k in range(len(modes))]

    @classmethod
    def _decompose(cls, weight: torch.Tensor, out_modes: Sequence[int], in_modes: Sequence[int], eps: float,
                   reverse: bool, bias: torch.Tensor | None, max_ranks: Sequence[int] | None = None) -> _TTLayer:
        """ε-TT-SVD (float64) with ‖W − W_TT‖_F ≤ ε‖W‖_F (ranks capped at ``max_ranks``, then
        the bound holds only where no cap binds); cores in W's dtype and device."""
        n_out, n_in = weight.shape
        out_modes = _check_modes("out_modes", out_modes, n_out)
        in_modes = _check_modes("in_modes", in_modes, n_in)
        w = weight.detach().double().cpu().numpy()
        tt = eps_tt_svd(layer_tensor(w, cls.format, out_modes, in_modes), eps, reverse=reverse, max_ranks=max_ranks)
        shapes = cls._core_shapes(out_modes, in_modes, tt.ranks)
        cores = [torch.from_numpy(np.ascontiguousarray(c).reshape(shape)).to(weight.dtype).to(weight.device)
                 for c, shape in zip(tt.cores, shapes)]
        return cls._assemble(cores, len(in_modes), None if bias is None else bias.detach().clone())

    def spec(self) -> dict:
        """JSON-ready shapes; ``from_spec`` rebuilds a zero module a state dict loads into."""
        return {"format": self.format.value, "out_modes": list(self.out_modes), "in_modes": list(self.in_modes),
                "ranks": list(self.ranks), "bias": self.bias is not None}

    @classmethod
    def from_spec(cls, spec: dict, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> _TTLayer:
        """A zero layer of the shapes ``spec`` records."""
        if spec.get("format") != cls.format:
            raise ValueError(f"not a {cls.__name__} spec (format {spec.get('format')!r}, "
                             f"expected {cls.format.value!r})")
        outs, ins = tuple(spec["out_modes"]), tuple(spec["in_modes"])
        cores = [torch.zeros(shape, dtype=dtype, device=device) for shape in cls._core_shapes(outs, ins, spec["ranks"])]
        bias = torch.zeros(math.prod(outs), dtype=dtype, device=device) if spec["bias"] else None
        return cls._assemble(cores, len(ins), bias)

    @property
    def ranks(self) -> tuple[int, ...]:
        """TT ranks (r_0 = 1, …, r_d = 1)."""
        return (1,) + tuple(int(c.shape[-1]) for c in self.cores)


# ----------------------------------------------------------------------------------------------
# Format B: TT-matrix (MPO)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContractionPlan:
    """How a TT-matrix forward contracts the input with its cores.

    ``groups``: sizes of consecutive runs of cores merged into one block before the sweep
    (all 1s: core by core; (p, d−p): the two-block split at p).  The planner never merges all
    d ≥ 2 cores (that is the dense W), though ``set_plan`` accepts it.
    ``direction``: ``"ltr"`` contracts block 1 (output/input digit 1, the coarsest) first,
    ``"rtl"`` the last block first.  For two blocks A|B, ``"ltr"`` is "A then B"."""

    groups: tuple[int, ...]
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in ("ltr", "rtl"):
            raise ValueError(f"direction must be 'ltr' or 'rtl', got {self.direction!r}")
        if not self.groups or any(g < 1 for g in self.groups):
            raise ValueError(f"groups must be positive run lengths, got {self.groups}")

    def __str__(self) -> str:
        return f"{self.direction}({'+'.join(map(str, self.groups))})"


# blocks (a, M, N, b) = (left rank, output size, input size, right rank)
Block = tuple[int, int, int, int]


def _blocks(shapes: list[tuple[int, ...]], groups: tuple[int, ...]) -> tuple[list[Block], int]:
    """Block shapes after merging each group of cores, and the multiply-adds the merging costs."""
    blocks, merge, start = [], 0, 0
    for g in groups:
        a, m_acc, n_acc, r = shapes[start]
        for _, m, n, b in shapes[start + 1:start + g]:
            merge += a * m_acc * n_acc * r * m * n * b  # [a·M·N, r] @ [r, m·n·b]
            m_acc, n_acc, r = m_acc * m, n_acc * n, b
        blocks.append((a, m_acc, n_acc, r))
        start += g
    return blocks, merge


def _sweep_macs(blocks: list[Block], direction: str) -> int:
    """Multiply-adds per token of the sequential sweep over ``blocks`` (notes §2, format B)."""
    total = 0
    for k, (a, m, n, b) in enumerate(blocks):
        before, after = blocks[:k], blocks[k + 1:]
        if direction == "ltr":  # state [M_<k, r_{k-1}·N_k, N_>k]
            total += math.prod(x[1] for x in before) * math.prod(x[2] for x in after) * a * n * m * b
        else:  # state [N_<k, N_k·r_k, M_>k]
            total += math.prod(x[2] for x in before) * math.prod(x[1] for x in after) * a * n * m * b
    return total


def _compositions(d: int) -> list[tuple[int, ...]]:
    """Every way to cut d cores into consecutive groups (2^(d−1) of them); for d > 8 only core
    by core, the two-block splits and the full merge (the enumeration would grow too large)."""
    if d <= 8:
        out = []
        for cuts in itertools.product((False, True), repeat=d - 1):
            sizes, run = [], 1
            for cut in cuts:
                if cut:
                    sizes.append(run)
                    run = 1
                else:
                    run += 1
            out.append(tuple(sizes + [run]))
        return out
    return [(1,) * d, (d,)] + [(p, d - p) for p in range(1, d)]


def _merge_cores(cores) -> torch.Tensor:
    """Contract consecutive TT-matrix cores into one block [a, Π m, Π n, b] (differentiable)."""
    full = cores[0]
    for core in cores[1:]:
        a, m_acc, n_acc, r = full.shape
        _, m, n, b = core.shape
        full = (full.reshape(a * m_acc * n_acc, r) @ core.reshape(r, m * n * b))
        full = full.reshape(a, m_acc, n_acc, m, n, b).permute(0, 1, 3, 2, 4, 5).reshape(a, m_acc * m, n_acc * n, b)
    return full


def _contract(mat: torch.Tensor, state: torch.Tensor, p: int, k: int, r: int) -> torch.Tensor:
    """out[P, Ko, R] = mat[Ko, K] @ state[P, K, R] (state given flat).

    Layout choice (measured on a 2-core CPU): one GEMM when R or P is 1; for R < 12 the
    batched product of skinny matrices is slow, so transpose to one [P·R, K] GEMM (two
    copies); otherwise a batched matmul with the matrix broadcast (no copy) — via ``matmul``
    when the matrix needs a gradient, since ``bmm`` of an expanded operand would materialise
    a [P, Ko, K] gradient."""
    ko = mat.shape[0]
    if r == 1:
        return state.reshape(p, k) @ mat.T
    if p == 1:
        return mat @ state.reshape(k, r)
    s = state.reshape(p, k, r)
    if r < 12:
        return (s.transpose(1, 2).reshape(p * r, k) @ mat.T).reshape(p, r, ko).transpose(1, 2)
    if mat.requires_grad and torch.is_grad_enabled():
        return torch.matmul(mat, s)
    return torch.bmm(mat.expand(p, ko, k), s)


class TTMatrixLinear(_TTLayer):
    """y = x Wᵀ + b with W [M, N] held as TT-matrix cores [r_{k-1}, m_k, n_k, r_k].

    Parameters: Σ r_{k-1} m_k n_k r_k (+ bias).  Modes may be 1 (out (M, 1), in (1, N) is a
    rank-r factorisation).  ``plan_tokens``: the batch the merge cost is amortised over when
    choosing the contraction plan (the merge runs once per forward in training; in eval mode
    it is cached, so the choice is then conservative)."""

    format = Format.TTM
    plan_tokens: int = 512

    def __init__(self, cores: list[torch.Tensor], bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if not cores:
            raise ValueError("a TT-matrix needs at least one core")
        self._check_chain(cores, "[r, m, n, r']")
        self.out_modes = tuple(int(c.shape[1]) for c in cores)
        self.in_modes = tuple(int(c.shape[2]) for c in cores)
        self.out_features, self.in_features = math.prod(self.out_modes), math.prod(self.in_modes)
        self._hold(cores, bias)
        self._forced_plan: ContractionPlan | None = None
        self._plan_key: tuple | None = None
        self._plan: ContractionPlan | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def _core_modes(cls, out_modes: tuple[int, ...], in_modes: tuple[int, ...]) -> list[tuple[int, ...]]:
        if len(out_modes) != len(in_modes):
            raise ValueError(f"need as many output as input modes, got {tuple(out_modes)} and {tuple(in_modes)}")
        return list(zip(out_modes, in_modes))

    @classmethod
    def _assemble(cls, cores: list[torch.Tensor], in_order: int, bias: torch.Tensor | None) -> TTMatrixLinear:
        return cls(cores, bias)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, out_modes: Sequence[int], in_modes: Sequence[int], eps: float,
                    reverse: bool = False, bias: torch.Tensor | None = None,
                    max_ranks: Sequence[int] | None = None) -> TTMatrixLinear:
        """ε-TT-SVD (float64) of W [M, N]: ‖W − W_TT‖_F ≤ ε‖W‖_F (ε relative Frobenius error;
        ranks capped at ``max_ranks``); cores in W's dtype/device."""
        if len(out_modes) != len(in_modes):
            raise ValueError(f"need as many output as input modes, got {tuple(out_modes)} and {tuple(in_modes)}")
        m, n = weight.shape
        if math.prod(out_modes) != m or math.prod(in_modes) != n:
            raise ValueError(f"modes {tuple(out_modes)}×{tuple(in_modes)} do not factor a {m}×{n} weight")
        return cls._decompose(weight, out_modes, in_modes, eps, reverse, bias, max_ranks)

    @classmethod
    def from_linear(cls, linear: nn.Linear, out_modes: Sequence[int], in_modes: Sequence[int],
                    eps: float, reverse: bool = False) -> TTMatrixLinear:
        """TT-SVD of ``linear.weight`` with relative Frobenius error ≤ ``eps``; the bias is copied.

        ``reverse`` sweeps the TT-SVD right to left (same bound, often other ranks)."""
        return cls.from_weight(linear.weight, out_modes, in_modes, eps, reverse, linear.bias)

    # -- shapes and costs -----------------------------------------------------------------------

    def _shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(s) for s in c.shape) for c in self.cores]

    def candidate_plans(self) -> list[tuple[ContractionPlan, int, int]]:
        """Every plan the planner considers, with (multiply-adds per token of its sweep,
        multiply-adds of its merges): each grouping of consecutive cores except all-in-one, in
        both directions.

        The planner minimises sweep + merge / ``plan_tokens`` (merging is done in the forward,
        once per call, so its cost is shared by the tokens of a batch)."""
        shapes, d = self._shapes(), len(self.cores)
        out = []
        for groups in _compositions(d):
            if len(groups) == 1 and d > 1:
                continue  # merging every core rebuilds the dense W: no savings in compute or (cached) memory
            blocks, merge = _blocks(shapes, groups)
            for direction in ("ltr", "rtl"):
                if len(groups) == 1 and direction == "rtl":
                    continue  # d = 1: the core is W, one GEMM either way
                out.append((ContractionPlan(groups, direction), _sweep_macs(blocks, direction), merge))
        return out

    @property
    def plan(self) -> ContractionPlan:
        """The contraction plan the forward uses (forced by ``set_plan`` or the cheapest)."""
        if self._forced_plan is not None:
            return self._forced_plan
        key = tuple(self._shapes())
        if key != self._plan_key:
            cands = self.candidate_plans()
            # ties: fewer blocks (fewer GEMMs), then enumeration order
            best = min(range(len(cands)), key=lambda i: (cands[i][1] + cands[i][2] / self.plan_tokens,
                                                         len(cands[i][0].groups), i))
            self._plan, self._plan_key = cands[best][0], key
        return self._plan

    def set_plan(self, plan: ContractionPlan | None) -> None:
        """Force a contraction plan (for tests and benchmarks); ``None`` restores the automatic one."""
        if plan is not None and sum(plan.groups) != len(self.cores):
            raise ValueError(f"plan {plan} groups {sum(plan.groups)} cores, the layer has {len(self.cores)}")
        self._forced_plan = plan
        self._derived.clear()

    def _plan_blocks(self) -> tuple[ContractionPlan, list[Block]]:
        plan = self.plan
        key = (tuple(self._shapes()), plan)
        if getattr(self, "_blocks_key", None) != key:  # memo: the forward needs them on every call
            self._blocks_key, self._blocks_value = key, _blocks(self._shapes(), plan.groups)[0]
        return plan, self._blocks_value

    @property
    def macs_per_token(self) -> int:
        """Multiply-adds per token of the current plan's sweep (merging and bias not included)."""
        plan, blocks = self._plan_blocks()
        return _sweep_macs(blocks, plan.direction)

    # -- compute --------------------------------------------------------------------------------

    def weight(self) -> torch.Tensor:
        """The dense W [M, N] (for checks; the forward does not use it)."""
        return _merge_cores(list(self.cores))[0, :, :, 0]

    def _matrices(self, plan: ContractionPlan) -> list[torch.Tensor]:
        """Per block, the matrix its sweep step multiplies by: rtl [a·M, N·b] (a view of the
        block), ltr [M·b, a·N] (one small permute copy)."""
        mats, start = [], 0
        for g in plan.groups:
            block = _merge_cores(list(self.cores[start:start + g]))
            a, m, n, b = block.shape
            mats.append(block.reshape(a * m, n * b) if plan.direction == "rtl"
                        else block.permute(1, 3, 0, 2).reshape(m * b, a * n))
            start += g
        return mats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, the layer expects {self.in_features}")
        plan, blocks = self._plan_blocks()
        params = list(self.cores)
        if _DerivedCache.usable(self, params):
            mats = self._derived.get(params, plan, lambda: self._matrices(plan))
        else:
            mats = self._matrices(plan)
        lead = x.shape[:-1]
        batch = math.prod(lead)
        state = x.reshape(batch, self.in_features)
        if plan.direction == "ltr":
            # state [batch·M_<k, r_{k-1}·N_k, N_>k] → [batch·M_<k, M_k·r_k, N_>k] = next state
            p, rest = batch, self.in_features
            for (a, m, n, _), mat in zip(blocks, mats):
                rest //= n
                state = _contract(mat, state, p, a * n, rest)
                p *= m
        else:
            # state [batch·N_<k, N_k·r_k, M_>k] → [batch·N_<k, r_{k-1}·M_k, M_>k] = next state
            p, done = batch * self.in_features, 1
            for (_, m, n, b), mat in zip(reversed(blocks), reversed(mats)):
                p //= n
                state = _contract(mat, state, p, n * b, done)
                done *= m
        y = state.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"out_modes={self.out_modes}, in_modes={self.in_modes}, ranks={self.ranks}, bias={self.bias is not None}"


# ----------------------------------------------------------------------------------------------
# Format A: plain TT of Wᵀ (the Saten authors' layout)
# ----------------------------------------------------------------------------------------------

def _chain(cores, first_rows: int) -> torch.Tensor:
    """Contract 3-D TT cores left to right into a matrix [first_rows·Π d_k / r_0 …, r_last] (row-major)."""
    full = cores[0].reshape(-1, cores[0].shape[2])  # [r_0·d_1, r_1]
    for core in cores[1:]:
        r, d, b = core.shape
        full = (full @ core.reshape(r, d * b)).reshape(-1, b)
    return full.reshape(first_rows, -1, full.shape[1])


class TTLinear(_TTLayer):
    """y = (x·A)·B + b with Wᵀ [N_in, N_out] held as plain TT cores G_k [r_{k-1}, d_k, r_k].

    The first ``in_order`` = p cores carry the input digits (a_1…a_p, row-major), the rest the
    output digits (b_1…b_q).  A = G_1⋯G_p [N_in, r_p], B = G_{p+1}⋯G_d [r_p, N_out].
    Parameters Σ r_{k-1} d_k r_k (+ bias); multiply-adds per token r_p·(N_in + N_out)."""

    format = Format.TT

    def __init__(self, cores: list[torch.Tensor], in_order: int, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if not 1 <= in_order < len(cores):
            raise ValueError(f"in_order must leave at least one input and one output core: got {in_order} "
                             f"of {len(cores)} cores")
        self._check_chain(cores, "[r, d, r']")
        self.in_order = in_order
        self.in_modes = tuple(int(c.shape[1]) for c in cores[:in_order])
        self.out_modes = tuple(int(c.shape[1]) for c in cores[in_order:])
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        self._hold(cores, bias)

    @classmethod
    def _core_modes(cls, out_modes: tuple[int, ...], in_modes: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(d,) for d in in_modes + out_modes]

    @classmethod
    def _assemble(cls, cores: list[torch.Tensor], in_order: int, bias: torch.Tensor | None) -> TTLinear:
        return cls(cores, in_order, bias)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, in_modes: Sequence[int], out_modes: Sequence[int], eps: float,
                    reverse: bool = False, bias: torch.Tensor | None = None,
                    max_ranks: Sequence[int] | None = None) -> TTLinear:
        """ε-TT-SVD (float64) of Wᵀ reshaped to (*in_modes, *out_modes), ε the relative Frobenius
        error (ranks capped at ``max_ranks``); cores in W's dtype."""
        return cls._decompose(weight, out_modes, in_modes, eps, reverse, bias, max_ranks)

    @classmethod
    def from_linear(cls, linear: nn.Linear, in_modes: Sequence[int], out_modes: Sequence[int], eps: float,
                    reverse: bool = False) -> TTLinear:
        """TT-SVD of ``linear.weight``ᵀ with relative Frobenius error ≤ ``eps``; the bias is copied."""
        return cls.from_weight(linear.weight, in_modes, out_modes, eps, reverse, linear.bias)

    @property
    def boundary_rank(self) -> int:
        """``ranks[in_order]``: the rank of Wᵀ = A·B."""
        return self.ranks[self.in_order]

    @property
    def macs_per_token(self) -> int:
        """Multiply-adds per token of (x·A)·B (forming A and B not included)."""
        return self.boundary_rank * (self.in_features + self.out_features)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.in_order
        a = _chain(list(self.cores[:p]), 1)[0]  # [N_in, r_p]
        b = _chain(list(self.cores[p:]), self.boundary_rank)  # [r_p, N_out, 1]
        return a, b.reshape(self.boundary_rank, self.out_features)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [N_in, r_p], B [r_p, N_out]) with Wᵀ = A·B; cached in eval mode without grad."""
        params = list(self.cores)
        if _DerivedCache.usable(self, params):
            return self._derived.get(params, None, self._factors)
        return self._factors()

    def weight(self) -> torch.Tensor:
        """The dense W [N_out, N_in] (for checks; the forward does not use it)."""
        a, b = self._factors()
        return (a @ b).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, the layer expects {self.in_features}")
        a, b = self.factors()
        y = (x @ a) @ b
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, bias={self.bias is not None}"


TT_LAYERS: dict[Format, type[TTMatrixLinear] | type[TTLinear]] = {Format.TTM: TTMatrixLinear, Format.TT: TTLinear}


def tt_layer(weight: torch.Tensor, fmt: Format | str, out_modes: Sequence[int], in_modes: Sequence[int],
             eps: float, reverse: bool = False, bias: torch.Tensor | None = None,
             max_ranks: Sequence[int] | None = None) -> TTMatrixLinear | TTLinear:
    """The TT layer of format ``fmt`` for W [out, in] at relative Frobenius error ≤ ``eps``
    (modes always given output first, whatever the layer's own argument order; ranks capped at
    ``max_ranks``, e.g. a plan's, if given)."""
    if Format.parse(fmt) is Format.TTM:
        return TTMatrixLinear.from_weight(weight, out_modes, in_modes, eps, reverse, bias, max_ranks)
    return TTLinear.from_weight(weight, in_modes, out_modes, eps, reverse, bias, max_ranks)

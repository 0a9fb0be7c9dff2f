"""FLAT-LLM: head-wise PCA of V absorbed into W_v/W_o, Nyström MLP selection, IPRS ranks.

Per layer l with keep ratio w_l (from IPRS or uniform):
* V/O: C_g = Σ_tokens y yᵀ of KV head g's value output (float64), Q̃_g = its top
  r_l = ⌊w_l·d_h⌋ eigenvectors; W_v^g ← Q̃_gᵀ W_v^g and W_o^h ← W_o^h Q̃_{g(h)}, g(h) = ⌊h/n⌋.
* MLP: C = Σ z zᵀ of the ``down_proj`` input; ridge leverage s = diag(C (C + λI)⁻¹), keep the
  k_l = ⌊w_l·d_int⌋ top neurons S; W_down ← W_down C[:, S] C[S, S]⁻¹ (least squares).
Layers with w_l = 1 are left bitwise untouched.

Limits, checked before any calibration (:meth:`FlatLLMConfig.preflight`): Q/K stay whole and
every layer keeps at least one value dimension per KV head and one MLP neuron, which bounds
the ratio (:func:`max_ratio`); the covariances are d_int × d_int (MLP) and d_h × d_h (V per
KV head), so the calibration needs at least max(d_int, d_h) tokens to estimate them.

``compress(model, FlatLLMConfig(...), calibration=windows)`` runs :func:`compress_flat_llm`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

from . import attention
from .architectures import (
    AttentionParts,
    Dims,
    MLPParts,
    block_parts,
    check_decoder,
    decoder_layers,
    decoder_linear_params,
    dims,
)
from .calibration import Accumulator, LayerInputs, run_layer, sequential
from .compress import (
    calibration_tokens,
    check_calibration_size,
    check_delivery,
    check_model,
    check_ratio,
    decoder_counts,
    decoder_report,
    format_ratio,
    register_handler,
)
from .iprs import allocate, layer_importance, mean_keep_ratio
from .slot_linear import SlotLinear


@dataclass
class FlatLLMConfig:
    """``ratio``: fraction of decoder-linear parameters removed (embeddings, lm_head and norms
    are not counted).  ``uniform``: the same keep ratio in every layer instead of IPRS."""

    ratio: float = 0.2
    uniform: bool = False
    ridge: float = 1.0  # λ of the ridge leverage scores, absolute (C is a sum over tokens)

    method = "flat-llm"  # the name in reports and config.json

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        if not self.ridge > 0:
            raise ArgumentError("ridge", f"must be positive (λ of the ridge leverage scores), got {self.ridge}")

    def preflight(self, model: nn.Module, tokens: int | None = None) -> None:
        """Refuse, before any calibration, what FLAT-LLM cannot do on ``model``: a ratio above
        :func:`max_ratio`, or fewer calibration ``tokens`` (windows × tokens per window; None:
        not known yet) than the covariances it estimates have rows."""
        check_model(model, None, needs_data=False)
        check_ratio_reachable(model, self.ratio, self.method)
        if tokens is not None:
            needed, what = calibration_tokens_needed(model)
            check_calibration_size(tokens, needed, what, self.method)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    dtype=like.weight.dtype, device=like.weight.device)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def value_bases(cov: torch.Tensor, rank: int) -> torch.Tensor:
    """Top-``rank`` eigenvectors of each per-head covariance [G, dh, dh] → [G, dh, rank]."""
    _, vecs = torch.linalg.eigh(cov)  # ascending
    return vecs.flip(-1)[..., :rank]


def _slots(count: int, head_dim: int, rank: int) -> torch.Tensor:
    """The first ``rank`` of each of ``count`` blocks of ``head_dim`` slots."""
    return (torch.arange(count)[:, None] * head_dim + torch.arange(rank)).reshape(-1)


def absorb_values(block: nn.Module, parts: AttentionParts, d: Dims, bases: torch.Tensor,
                  narrow: bool = True) -> None:
    """W_v^g ← Q̃_gᵀ W_v^g and W_o^h ← W_o^h Q̃_{g(h)}: V then has head size r.  ``narrow``:
    V and O shrink and the attention runs :mod:`.attention`'s forward; otherwise the family's
    own forward stays, V writes its r dimensions per head into zero-padded slots and O reads
    only those (:class:`SlotLinear`)."""
    groups, head_dim, rank = bases.shape
    attn = block.get_submodule(parts.path)
    values, out = attn.get_submodule(parts.values), attn.get_submodule(parts.output)
    rows = parts.value_rows(d)
    q = bases.double()
    wv = values.weight.double()[rows].reshape(groups, head_dim, -1)
    new_v = torch.einsum("gdr,gdi->gri", q, wv).reshape(groups * rank, -1)
    new_bias = None if values.bias is None else torch.einsum(
        "gdr,gd->gr", q, values.bias.double()[rows].reshape(groups, -1)).reshape(-1)
    wo = out.weight.double().reshape(-1, d.heads, head_dim)
    kv_of = torch.arange(d.heads) // (d.heads // groups)
    new_o = torch.einsum("ohd,hdr->ohr", wo, q[kv_of]).reshape(wo.shape[0], d.heads * rank)
    if narrow:
        attn.set_submodule(parts.values, _linear(new_v, new_bias, values))
        attn.set_submodule(parts.output, _linear(new_o, out.bias, out))
        attention.patch(attn)
        return
    slots = _slots(groups, head_dim, rank) + rows.start
    if parts.fused:  # queries and keys stay as they are, in front of the narrowed values
        new_v = torch.cat([values.weight.double()[:rows.start], new_v])
        new_bias = None if values.bias is None else torch.cat([values.bias.double()[:rows.start], new_bias])
        slots = torch.cat([torch.arange(rows.start), slots])
    dtype = values.weight.dtype
    attn.set_submodule(parts.values, SlotLinear(new_v.to(dtype), None if new_bias is None else new_bias.to(dtype),
                                                values.in_features, values.out_features, outputs=slots))
    attn.set_submodule(parts.output, SlotLinear(new_o.to(dtype), None if out.bias is None else out.bias.detach(),
                                                out.in_features, out.out_features,
                                                inputs=_slots(d.heads, head_dim, rank)))


def nystrom_select(cov: torch.Tensor, width: int, ridge: float) -> torch.Tensor:
    """Indices of the ``width`` neurons with the largest ridge leverage scores (sorted)."""
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    scores = 1.0 - ridge * torch.diagonal(torch.linalg.inv(cov + ridge * eye))
    return torch.sort(torch.topk(scores, width).indices).values


def prune_mlp(mlp: nn.Module, parts: MLPParts, keep: torch.Tensor, cov: torch.Tensor) -> None:
    """Keep neurons ``keep`` of the input projections (both halves of a fused gate/up); refit
    the down projection by least squares on C."""
    c_sk = cov[keep]  # [k, d_int]
    down = mlp.get_submodule(parts.down)
    new_down = torch.linalg.solve(c_sk[:, keep], c_sk @ down.weight.double().T).T  # W_down C[:,S] C[S,S]⁻¹
    rows = torch.cat([keep, keep + down.in_features]) if parts.fused else keep
    for name in parts.inputs:
        old = mlp.get_submodule(name)
        mlp.set_submodule(name, _linear(old.weight[rows], _rows(old.bias, rows), old))
    mlp.set_submodule(parts.down, _linear(new_down, down.bias, down))


def _rows(bias: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    return None if bias is None else bias[keep]


@torch.no_grad()
def importance_scores(model: nn.Module, windows: list[torch.Tensor]) -> list[float]:
    """t_l: mean over tokens of arccos(clamp(cos(x_in, x_out), 0, 1))/π, uncompressed model."""
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    count = [0] * len(layers)

    def hook(index):
        def record(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            s, n = layer_importance(hidden, output[0] if isinstance(output, tuple) else output)
            sums[index] += s
            count[index] += n
        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for ids in windows:
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [s / max(n, 1) for s, n in zip(sums, count)]


def keep_ratios(model: nn.Module, config: FlatLLMConfig, windows: list[torch.Tensor]) -> list[float]:
    """Keep ratio w_l of every decoder layer: IPRS from importance on ``windows``, or uniform;
    never below :func:`min_keep` (nor above 1)."""
    d = dims(model)
    floor = min_keep(d)
    rbar = max(mean_keep_ratio(config.ratio, d.hidden, d.heads, d.kv_heads, d.head_dim, d.intermediate,
                               d.mlp_matrices), floor)
    if config.uniform:
        return [min(rbar, 1.0)] * d.layers
    t = [max(x, 1e-12) for x in importance_scores(model, windows)]
    return allocate(t, rbar, floor)


def _unit_params(d: Dims) -> tuple[int, int, int]:
    """(weights per value dimension: a row of W_v per KV head and a column of W_o per head,
    weights per MLP neuron: its gate and up rows (or up row) and down column, V/O/MLP weights
    of a layer)."""
    per_dim = d.hidden * (d.kv_heads + d.heads)
    per_neuron = d.mlp_matrices * d.hidden
    return per_dim, per_neuron, per_dim * d.head_dim + per_neuron * d.intermediate


def rounding_step(model: nn.Module) -> float:
    """The fraction of the decoder-linear parameters one value dimension per KV head plus one
    MLP neuron per layer are worth: what flooring the widths (as the authors' code does) can
    move the delivered ratio by."""
    d = dims(model)
    per_dim, per_neuron, _ = _unit_params(d)
    return (per_dim + per_neuron) * d.layers / decoder_linear_params(model)


def min_keep(d: Dims) -> float:
    """The smallest keep ratio a layer can realise: one value dimension per KV head and one
    MLP neuron (fraction of the layer's V/O/MLP weights)."""
    per_dim, per_neuron, total = _unit_params(d)
    return (per_dim + per_neuron) / total


def layer_widths(d: Dims, w: float) -> tuple[int, int]:
    """(V head size r_l, MLP width k_l) for keep ratio w: ⌊w·d_h⌋ and ⌊w·d_int⌋ as in the
    authors' code, at least 1 each."""
    return max(1, math.floor(w * d.head_dim)), max(1, math.floor(w * d.intermediate))


def _values_are_where_expected(layer: nn.Module, parts: AttentionParts, d: Dims, inputs: LayerInputs) -> bool:
    """Whether zeroing the rows taken for values zeroes what the output projection reads — true
    of values (softmax weights times zero), false of queries or keys."""
    attn = layer.get_submodule(parts.path)
    values, rows = attn.get_submodule(parts.values), parts.value_rows(d)
    params = [t for t in (values.weight, values.bias) if t is not None]
    saved = [t.detach().clone() for t in params]
    seen = []
    hook = attn.get_submodule(parts.output).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        for t in params:
            t.data[rows] = 0
        run_layer(layer, inputs)
    finally:
        hook.remove()
        for t, old in zip(params, saved):
            t.data.copy_(old)
    return all(not bool(x.any()) for x in seen)


def _narrow_forward_matches(layer: nn.Module, parts: AttentionParts, inputs: LayerInputs) -> bool:
    """Whether :mod:`.attention`'s forward (narrow values) computes what the family's own does."""
    if (parts.inputs, parts.output) != (("q_proj", "k_proj", "v_proj"), "o_proj"):
        return False  # the names that forward reads
    attn = layer.get_submodule(parts.path)
    reference = run_layer(layer, inputs)
    own = type(attn)
    attention.patch(attn)
    try:
        patched = run_layer(layer, inputs)
    except Exception:  # noqa: BLE001 - any failure means: keep the family's own forward
        return False
    finally:
        attn.__class__ = own
    # bit for bit: a forward that differs only slightly (soft-capping of small scores, say)
    # still differs, and would on other inputs
    return all(torch.equal(a, b) for (a, _), (b, _) in zip(reference, patched))


def rewrite_layer(layer: nn.Module, inputs: LayerInputs, d: Dims, w: float, ridge: float) -> dict:
    """Gather V and MLP statistics on ``inputs`` (layer uncompressed), then compress it."""
    rank, width = layer_widths(d, w)
    if w >= 1.0:
        return {"v_head_dim": d.head_dim, "mlp_width": d.intermediate, "keep": 1.0}
    parts, mlp = block_parts(layer, d)
    if not _values_are_where_expected(layer, parts, d, inputs[:1]):
        raise ShapesearchError(f"FLAT-LLM cannot find the values of this {type(layer).__name__}: its "
                               f"{parts.path}.{parts.values} does not hold them in its last "
                               f"{d.kv_heads * d.head_dim} rows; use svd, svd-llm, tt or saten instead")
    narrow = _narrow_forward_matches(layer, parts, inputs[:1])
    attn, mlp_module = layer.get_submodule(parts.path), layer.get_submodule(mlp.path)
    v_stats = Accumulator(attn.get_submodule(parts.values), output=True, groups=d.kv_heads,
                          part=parts.value_rows(d))
    mlp_stats = Accumulator(mlp_module.get_submodule(mlp.down))
    try:
        run_layer(layer, inputs)
    finally:
        cov_v, cov = v_stats.close(), mlp_stats.close()
    cov_v = cov_v.reshape(d.kv_heads, d.head_dim, d.head_dim)  # one KV head: a plain [d_h, d_h]
    absorb_values(layer, parts, d, value_bases(cov_v, rank), narrow)
    prune_mlp(mlp_module, mlp, nystrom_select(cov, width, ridge), cov)
    return {"v_head_dim": rank, "mlp_width": width, "keep": w, "values": "narrow" if narrow else "padded"}


def kept_decoder_params(model: nn.Module, keep: list[float]) -> int:
    """Decoder-linear parameters FLAT-LLM leaves with keep ratios ``keep`` (computed, not built)."""
    d = dims(model)
    return _kept_params(model, [None if w >= 1.0 else layer_widths(d, w) for w in keep])


def _kept_params(model: nn.Module, widths: list[tuple[int, int] | None]) -> int:
    """Decoder-linear parameters left with (V head size, MLP width) per layer (None: whole)."""
    d = dims(model)
    removed = 0
    for layer, width in zip(decoder_layers(model), widths):
        if width is None:
            continue
        rank, neurons = width
        parts, mlp = block_parts(layer, d)
        values = layer.get_submodule(parts.path).get_submodule(parts.values)
        removed += (d.head_dim - rank) * d.kv_heads * (d.hidden + (values.bias is not None))
        removed += d.hidden * d.heads * (d.head_dim - rank)
        inputs = [layer.get_submodule(mlp.path).get_submodule(n) for n in mlp.inputs]
        removed += (d.intermediate - neurons) * (d.mlp_matrices * d.hidden + mlp.rows_per_neuron // len(inputs)
                                                 * sum(m.bias is not None for m in inputs))
    return decoder_linear_params(model) - removed


def max_ratio(model: nn.Module) -> float:
    """The largest fraction of ``model``'s decoder-linear parameters FLAT-LLM can remove: Q/K
    stay whole and every layer keeps one value dimension per KV head and one MLP neuron."""
    check_decoder(model)
    return 1 - _kept_params(model, [(1, 1)] * dims(model).layers) / decoder_linear_params(model)


def check_ratio_reachable(model: nn.Module, ratio: float, method: str) -> None:
    """Refuse a ``ratio`` above :func:`max_ratio` (``method`` names who asks: FLAT-LLM itself,
    or a baseline matched to its parameter count)."""
    top = max_ratio(model)
    if ratio > top + 1e-12:
        why = ("FLAT-LLM" if method == "flat-llm"
               else f"{method} is matched to FLAT-LLM's parameter count, and FLAT-LLM")
        raise ArgumentError("ratio", f"{ratio:g} is more than this model allows: {why} can remove at most "
                                     f"{format_ratio(top)} of this model's decoder-linear parameters (it leaves "
                                     "q/k whole and keeps at least 1 value dimension per KV head and 1 MLP neuron "
                                     "per layer); give a smaller ratio")


def calibration_tokens_needed(model: nn.Module) -> tuple[int, str]:
    """(tokens, which covariance): the largest covariance FLAT-LLM estimates per layer is the
    MLP's d_int × d_int (the V covariances are d_h × d_h per KV head); fewer tokens than rows
    leave it singular and the least-squares refit of ``down_proj`` meaningless."""
    d = dims(model)
    if d.intermediate >= d.head_dim:
        return d.intermediate, f"MLP width {d.intermediate}"
    return d.head_dim, f"head size {d.head_dim}"


@register_handler(FlatLLMConfig)
@torch.no_grad()
def compress_flat_llm(model: nn.Module, config: FlatLLMConfig, calibration: list[torch.Tensor] | None = None,
                      progress: Callable[[int], None] | None = None) -> dict:
    """FLAT-LLM in place, layer by layer on ``calibration`` windows ([1, T] token ids each);
    ``progress`` is called with each finished layer's index.  Returns the report."""
    check_model(model, calibration, needs_data=True)
    config.preflight(model, calibration_tokens(calibration))
    model.eval()
    before = decoder_counts(model)
    start = time.perf_counter()
    keep = keep_ratios(model, config, calibration)
    check_delivery(config.method, config.ratio, 1 - kept_decoder_params(model, keep) / before[0],
                   rounding_step(model))
    d = dims(model)
    layers: list[dict] = []
    sequential(model, calibration,
               lambda i, layer, inputs: layers.append(rewrite_layer(layer, inputs, d, keep[i], config.ridge)),
               progress)
    record = {"method": config.method, "uniform": config.uniform, "layers": layers, "ratio": config.ratio}
    return decoder_report(model, record, before, time.perf_counter() - start, calibration)

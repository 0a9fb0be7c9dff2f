"""Model compressors that rewrite transformers models: FLAT-LLM, low-rank baselines, and TT /
Saten layers from a per-layer shape plan.

``compress(model, config, calibration=...)`` rewrites in place and returns a report;
``save(model, dir)`` / ``load(dir)`` round-trip through safetensors.  "ratio" always means the
fraction of decoder-linear parameters removed; reports give the whole-model fraction too.
"""

from .compress import compress
from .finetune import FinetuneConfig, finetune
from .flat_llm import FlatLLMConfig
from .low_rank import SVDConfig, SVDLLMConfig
from .serialization import load, save
from .tt_compress import SatenConfig, TTConfig

__all__ = ["FinetuneConfig", "FlatLLMConfig", "SVDConfig", "SVDLLMConfig", "SatenConfig", "TTConfig", "compress",
           "finetune", "load", "save"]

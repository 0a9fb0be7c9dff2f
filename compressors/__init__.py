"""Model compressors: FLAT-LLM and low-rank baselines that rewrite transformers models.

``compress(model, config, calibration=...)`` rewrites in place and returns a report;
``save(model, dir)`` / ``load(dir)`` round-trip through safetensors.  "ratio" always means the
fraction of decoder-linear parameters removed; reports give the whole-model fraction too.
"""

from .compress import compress
from .flat_llm import FlatLLMConfig
from .low_rank import SVDConfig, SVDLLMConfig
from .serialization import load, save

__all__ = ["FlatLLMConfig", "SVDConfig", "SVDLLMConfig", "compress", "load", "save"]

"""Model compressors that rewrite transformers models: FLAT-LLM, low-rank baselines, and TT /
Saten layers from a per-layer shape plan.

``compress(model, config, calibration=...)`` rewrites in place and returns a report (a list of
configs is a recipe, applied in order);
``save(model, dir)`` / ``load(dir)`` round-trip through safetensors; ``compress_model`` /
``evaluate_model`` run a whole job from a model name (load, compress, fine-tune, save,
``report.json``; perplexity and speed).  "ratio" always means the
fraction of decoder-linear parameters removed; reports give the whole-model fraction too.
Importing the package registers compressed directories with transformers' Auto classes, so
``AutoModelForCausalLM.from_pretrained(dir)`` gives what ``load(dir)`` gives.
"""

# importing the modules that hold the configs also registers their compress() handlers
from .compress import compress
from .finetune import FinetuneConfig, finetune
from .flat_llm import FlatLLMConfig
from .hf_auto import register as _register_auto_classes
from .layer_plans import PlanRequest, plan_layers
from .low_rank import SVDConfig, SVDLLMConfig
from .low_rank_linear import LowRankLinear
from .model_jobs import compress_model, evaluate_model
from .model_loading import load_model
from .ptnn import PTNNConfig
from .saten import SatenLinear, SparseResidual
from .serialization import load, save
from .tt_compress import SatenConfig, TTConfig, read_plan
from .tt_embedding import TiedLMHead, TTEmbedding
from .tt_linear import TTLinear, TTMatrixLinear

_register_auto_classes()  # compressed directories then load through AutoModel*.from_pretrained too

__all__ = ["FinetuneConfig", "FlatLLMConfig", "LowRankLinear", "PTNNConfig", "PlanRequest", "SVDConfig", "SVDLLMConfig",
           "SatenConfig", "SatenLinear", "SparseResidual", "TTConfig", "TTEmbedding", "TTLinear", "TTMatrixLinear",
           "TiedLMHead", "compress", "compress_model",
           "evaluate_model", "finetune", "load", "load_model", "plan_layers", "read_plan", "save"]

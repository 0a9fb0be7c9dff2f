"""Weight-matrix shapes: the TT layer formats, the per-layer search, the budget allocator
and the layer plan they write (numpy only; the compressors read the plan).

ε is always the relative Frobenius error ‖W − W_TT‖_F / ‖W‖_F of a layer; parameters are
stored TT values, and a compression ratio (CR) is dense entries / TT parameters.
"""

from .budget import allocate
from .formats import Format, balanced_factors, balanced_shape, layer_tensor, matrix_tensor, modes_of, shape_from_modes
from .layer_search import DEFAULT_EPS_GRID, LayerSearchConfig, make_plan, search_layers, search_matrix
from .plan import PLAN_VERSION, BalancedShape, LayerPlan, Plan, PlanSummary

__all__ = ["DEFAULT_EPS_GRID", "PLAN_VERSION", "BalancedShape", "Format", "LayerPlan", "LayerSearchConfig", "Plan",
           "PlanSummary", "allocate", "balanced_factors", "balanced_shape", "layer_tensor", "make_plan",
           "matrix_tensor", "modes_of", "search_layers", "search_matrix", "shape_from_modes"]

"""The search engine: tensorizations, error-bounded TT-SVD, fitness, surrogate, GA, executors,
checkpoints.  numpy / TensorLy / DEAP / Ray only: it never imports torch, ``compressors`` or
the command line."""

from .executors import Executor, LocalExecutor, RayExecutor, make_executor, start_ray
from .pareto import ParetoPoint, ParetoResult, eps_grid, run_pareto
from .search import SearchConfig, SearchResult, run_search
from .tensorization import AxisSplit, Tensorization
from .tt_svd import TTResult, relative_error, tt_svd

__all__ = ["AxisSplit", "Executor", "LocalExecutor", "ParetoPoint", "ParetoResult", "RayExecutor", "SearchConfig",
           "SearchResult", "TTResult", "Tensorization", "eps_grid", "make_executor", "relative_error", "run_pareto",
           "run_search", "start_ray", "tt_svd"]

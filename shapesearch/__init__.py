"""shapesearch: evolutionary search of tensor-train shapes under a hard error bound.

ε is a relative Frobenius error bound; CR = original entries / TT parameters.
"""

from .executors import LocalExecutor, RayExecutor, make_executor
from .search import SearchConfig, SearchResult, run_search
from .tensorization import AxisSplit, Tensorization
from .tt_svd import TTResult, tt_svd

__all__ = ["AxisSplit", "LocalExecutor", "RayExecutor", "SearchConfig", "SearchResult", "TTResult",
           "Tensorization", "make_executor", "run_search", "tt_svd"]

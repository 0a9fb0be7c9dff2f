"""shapesearch: evolutionary search of tensor-train shapes under a hard error bound.

ε is a relative Frobenius error bound; CR = original entries / TT parameters.  The engine
(``shapesearch.engine``) is re-exported here; weight-matrix shapes and layer plans live in
``shapesearch.matrix``, search jobs with files on disk in ``shapesearch.jobs``, the job service (HTTP API, store,
drivers on Ray) in ``shapesearch.service`` and its Python client as ``shapesearch.Client``.
"""

from .engine import (
    AxisSplit,
    LocalExecutor,
    RayExecutor,
    SearchConfig,
    SearchResult,
    Tensorization,
    TTResult,
    eps_grid,
    make_executor,
    run_pareto,
    run_search,
    tt_svd,
)
from .errors import ArgumentError, ShapesearchError
from .service.client import Client

__all__ = ["ArgumentError", "AxisSplit", "Client", "LocalExecutor", "RayExecutor", "SearchConfig", "SearchResult",
           "ShapesearchError", "TTResult", "Tensorization", "eps_grid", "make_executor", "run_pareto", "run_search",
           "tt_svd"]

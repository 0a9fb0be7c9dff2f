"""Weight-matrix shapes: the TT layer formats, the per-layer search, the budget allocator
and the layer plan they write (numpy only; the compressors read the plan)."""

"""`flaxdigits bench`: the benchmark runner (`runner`) and its one-row-per-process workers."""

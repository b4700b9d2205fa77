"""Training workers, one process per benchmark row: `python -m flaxdigits.bench.workers.NAME`."""

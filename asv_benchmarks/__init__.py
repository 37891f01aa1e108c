"""asv benchmark suite of fastbp (run from the repo root: ``asv run --python=same``)."""

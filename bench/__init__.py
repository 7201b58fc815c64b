"""Speed benchmarks, one per stage: run as modules from the repo root, e.g. `python -m bench.train_epoch`."""

"""Helper programs beside the shell scripts: run as modules from the repo root, e.g.
`python -m scripts.import_checkpoint`."""

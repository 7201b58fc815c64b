import fcntl
import os
import sys

import pytest

import datasets
from helpers import torch_threads


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits: offline, small, and real enough for split and loader checks."""
    return datasets.load_data("digits", device="cpu", split_seed=1)


def _train_original(tmp_path_factory, name, *extra):
    """A ConvNet trained on digits in this process (no interpreter start-up): 8 epochs, ~99% test accuracy.
    Trained once per test run: under pytest-xdist the workers share it through a lock in the run's base
    folder (the first one trains, the others wait and reuse it)."""
    import main_train
    base = tmp_path_factory.getbasetemp()
    base = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "model.pt").exists():  # model.pt is written last (atomically): present = finished
            argv = ["main_train.py", "--dataset", "digits", "--arch", "convnet", "--epochs", "8", "--batch_size",
                    "32", "--lr", "0.05", "--scheduler", "cosine", "--quiet", "--save_dir", str(out), *extra]
            with pytest.MonkeyPatch.context() as mp, torch_threads(2):  # the same weights on every machine
                mp.setattr(sys, "argv", argv)
                main_train.main()
    return str(out / "model.pt")


@pytest.fixture(scope="session")
def digits_original(tmp_path_factory):
    """The original model most unlearning tests share: trained on the digits val10 train split, so it has seen
    every forget sample. Read-only: tests that change it must copy it."""
    return _train_original(tmp_path_factory, "digits_original")


@pytest.fixture(scope="session")
def digits_original_regun(tmp_path_factory):
    """The same on the regun split: its held-out 10% was never trained on (ReGUn, A_AMU)."""
    return _train_original(tmp_path_factory, "digits_original_regun", "--split", "regun")

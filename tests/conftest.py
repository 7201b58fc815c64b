import os
import sys

import pytest
import torch

import datasets

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core (scripts/run_tests.sh): one thread each
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits: offline, small, and real enough for split and loader checks."""
    return datasets.load_data("digits", device="cpu", split_seed=1)


def _train_original(out, *extra):
    """A ConvNet trained on digits in this process (no interpreter start-up): 8 epochs, ~99% test accuracy."""
    import main_train
    argv = ["main_train.py", "--dataset", "digits", "--arch", "convnet", "--epochs", "8", "--batch_size", "32",
            "--lr", "0.05", "--scheduler", "cosine", "--quiet", "--save_dir", str(out), *extra]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        main_train.main()
    return str(out / "model.pt")


@pytest.fixture(scope="session")
def digits_original(tmp_path_factory):
    """The original model most unlearning tests share: trained on the digits val10 train split, so it has seen
    every forget sample. Read-only: tests that change it must copy it."""
    return _train_original(tmp_path_factory.mktemp("digits_original"))


@pytest.fixture(scope="session")
def digits_original_regun(tmp_path_factory):
    """The same on the regun split: its held-out 10% was never trained on (ReGUn, A_AMU)."""
    return _train_original(tmp_path_factory.mktemp("digits_original_regun"), "--split", "regun")

"""The ReGUn split (a held-out part taken first) and the ReGUn method on digits."""
import json
import sys

import numpy as np
import pytest
import torch

import datasets
import main_forget
import models
from unlearn.regun import HeldoutPool, select_class_informed, target_distribution
from utils import UsageError, save_checkpoint
from helpers import run


@pytest.fixture(scope="module")
def regun_model(digits_original_regun):
    return digits_original_regun


def forget(model, out, *extra):
    return run("main_forget.py", "--mask", model, "--save_dir", str(out), "--quiet", "--mia_jobs", "1", *extra)


def test_regun_split_takes_the_heldout_part_first_and_parts_are_disjoint():
    y = np.arange(1000) % 10
    parts = datasets.make_split(y, 10, split_seed=42, scheme="regun")
    assert (len(parts["heldout"]), len(parts["val"]), len(parts["train"])) == (100, 90, 810)
    everything = np.concatenate([parts["heldout"], parts["val"], parts["train"]])
    assert len(np.unique(everything)) == 1000
    again = datasets.make_split(y, 10, split_seed=42, scheme="regun")
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = datasets.make_split(y, 10, split_seed=43, scheme="regun")
    assert not np.array_equal(parts["heldout"], other["heldout"])
    assert len(datasets.make_split(y, 10, 1)["heldout"]) == 0  # val10 has none


def test_class_informed_selector_matches_the_forget_batch_class_histogram():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # class 4 absent from the pool
    pool = HeldoutPool.__new__(HeldoutPool)
    pool.labels, pool.logits = labels, torch.randn(10, 5)
    pool.count = torch.bincount(labels, minlength=5)
    pool.start = torch.cumsum(pool.count, 0) - pool.count
    forget_labels = torch.tensor([2, 2, 0, 3, 1, 2, 0, 2])
    picked = select_class_informed(pool, forget_labels, torch.Generator().manual_seed(0))
    assert torch.equal(pool.labels[picked], forget_labels)  # each draw from its own class: same histogram
    fallback = select_class_informed(pool, torch.tensor([4, 4, 4]), torch.Generator().manual_seed(0))
    assert ((fallback >= 0) & (fallback < 10)).all()


def test_target_aggregations():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    probs = torch.softmax(logits, 1).mean(0)
    assert torch.allclose(target_distribution(logits, 1.0, "mean_probs"), probs)
    assert torch.allclose(target_distribution(logits, 1.0, "mean_logits"), torch.softmax(torch.tensor([1.0, 0.0]), 0))


def test_regun_forgets_a_class_and_keeps_the_rest(regun_model, tmp_path):
    base = forget(regun_model, tmp_path / "none", "--unlearn", "none", "--class_to_replace", "3")
    res = forget(regun_model, tmp_path / "regun", "--unlearn", "ReGUn", "--class_to_replace", "3")
    assert base.returncode == 0 and res.returncode == 0, res.stderr
    m0 = json.load(open(tmp_path / "none" / "results.json"))["metrics"]
    result = json.load(open(tmp_path / "regun" / "results.json"))
    m = result["metrics"]
    assert m["UA"] > m0["UA"] + 50 and m["RA"] > 85, (m0, m)
    assert result["config"]["regun_selector"] == "class_informed" and result["split"]["name"] == "regun"


def untrained_model(path, split="val10"):
    """A model.pt without training: enough for checks that fail before any unlearning."""
    info = datasets.get_info("digits")
    model = models.get_model("convnet", info.num_classes, info.channels, info.im_size, info.mean, info.std)
    save_checkpoint(models.model_record(model, "convnet", info, info.mean, info.std,
                                        split={"name": split, "seed": 1}), str(path))
    return str(path)


def test_regun_without_heldout_data_fails_with_one_line(tmp_path):
    res = forget(untrained_model(tmp_path / "plain.pt"), tmp_path / "a", "--unlearn", "ReGUn",
                 "--class_to_replace", "3")
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "--split regun" in res.stderr, res.stderr


@pytest.mark.parametrize("extra, flag", [(["--split", "val10"], "--split"),
                                         (["--regun_selector", "nearest"], "--regun_selector")])
def test_a_wrong_split_or_selector_is_a_usage_error(tmp_path, monkeypatch, extra, flag):
    model = untrained_model(tmp_path / "regun.pt", split="regun")
    monkeypatch.setattr(sys, "argv", ["main_forget.py", "--mask", model, "--unlearn", "ReGUn", "--class_to_replace",
                                      "3", "--save_dir", str(tmp_path / "out"), *extra])
    with pytest.raises(UsageError, match=flag):
        main_forget.main()
    with pytest.raises(UsageError, match="--split"):
        datasets.load_data("digits", split="bogus")

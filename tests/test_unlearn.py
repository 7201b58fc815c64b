"""Unlearning methods on digits: each does what it claims, and main_forget.py rejects bad input cleanly."""
import argparse
import json

import numpy as np
import pytest
import torch

import models
import unlearn
from datasets import select_forget
from unlearn.common import Context
from unlearn.l1_sparse import l1_coefficient
from unlearn.salun import saliency_mask
from helpers import run, run_main


@pytest.fixture(scope="module")
def original(digits_original):
    """A ConvNet trained on the digits train split: accurate, and it has seen every forget sample."""
    return digits_original


def forget_run(original, tmp_path, method, *extra):
    out = tmp_path / method
    res = run("main_forget.py", "--mask", original, "--unlearn", method, "--save_dir", str(out), "--quiet",
              "--mia_jobs", "1", "--batch_size", "64", *extra)
    assert res.returncode == 0, res.stderr
    return json.load(open(out / "results.json"))


RANDOM = ["--class_to_replace", "-1", "--num_indexes_to_replace", "130"]


def test_ga_raises_unlearning_accuracy(original, tmp_path):
    base = forget_run(original, tmp_path, "none", *RANDOM)["metrics"]
    ga = forget_run(original, tmp_path, "GA", *RANDOM, "--unlearn_lr", "0.01", "--unlearn_epochs", "3")
    assert ga["metrics"]["UA"] > base["UA"] + 5, (base, ga["metrics"])
    assert ga["config"]["unlearn_lr"] == 0.01 and len(ga["history"]) == 3
    saved = np.load(tmp_path / "GA" / "forget_indices.npy")
    assert len(saved) == 130 and ga["forget"]["indices_file"] == "forget_indices.npy"


def test_retrain_forgets_like_unseen_data(original, tmp_path):
    res = forget_run(original, tmp_path, "retrain", *RANDOM)["metrics"]
    # random forgetting: the forget samples are just unseen digits, so their error ~ test error
    assert abs(res["UA"] - (100 - res["TA"])) < 6, res
    assert res["TA"] > 85


def test_ft_keeps_retain_accuracy(original, tmp_path):
    base = forget_run(original, tmp_path, "none", "--class_to_replace", "3")["metrics"]
    ft = forget_run(original, tmp_path, "FT", "--class_to_replace", "3", "--unlearn_epochs", "2")["metrics"]
    assert ft["RA"] >= base["RA"] - 2, (base, ft)
    assert "TA_forgotten" in ft  # class-wise: TA excludes class 3, its own test accuracy reported apart


def test_l1_coefficient_decays_linearly_to_zero():
    coefs = [l1_coefficient(1e-4, e, 10) for e in range(10)]
    assert np.allclose(coefs, [1e-4 * (1 - e / 10) for e in range(10)])
    assert np.allclose(np.diff(coefs), -1e-5)  # linear
    assert l1_coefficient(1e-4, 10, 10) == 0 and l1_coefficient(1e-4, 8, 10, no_l1_epochs=2) == 0


def salun_setup(digits, variant):
    torch.manual_seed(0)
    info = digits.info
    model = models.get_model("convnet", 10, 1, 8, info.mean, info.std)
    forget, _ = select_forget(digits.y_train_np, digits.train_idx, 10, "-1", 60, seed=0)
    retain = np.setdiff1d(digits.train_idx, forget)
    ctx = Context(retain=digits.loader(retain, train=True, batch_size=128), num_classes=10,
                  forget=digits.loader(forget, train=True, batch_size=64), device=torch.device("cpu"),
                  make_model=None)
    cfg = argparse.Namespace(**{**unlearn.get_method("SalUn").defaults, "unlearn_lr": 0.05, "unlearn_epochs": 1,
                                "momentum": 0.9, "weight_decay": 5e-2, "mask_ratio": 0.3, "mask_path": None,
                                "variant": variant, "batch_size": 64})
    return model, ctx, cfg


def test_saliency_mask_has_the_requested_fraction(digits):
    model, ctx, _ = salun_setup(digits, "default")
    masks = saliency_mask(model, ctx.forget, 0.3)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * total)
    assert set(masks) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("variant,frozen_moves", [("default", False), ("legacy", True)])
def test_salun_leaves_non_salient_weights_alone(digits, variant, frozen_moves):
    model, ctx, cfg = salun_setup(digits, variant)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = saliency_mask(model, ctx.forget, cfg.mask_ratio)
    unlearn.get_method("SalUn").run(model, ctx, cfg)
    moved_frozen = any(not torch.equal(p[~masks[n]], before[n][~masks[n]]) for n, p in model.named_parameters())
    moved_salient = any(not torch.equal(p[masks[n]], before[n][masks[n]]) for n, p in model.named_parameters())
    assert moved_salient
    # legacy = the seeds before their fix: SGD weight decay still shrank the non-salient weights
    assert moved_frozen == frozen_moves


def test_method_registry_aliases():
    assert unlearn.get_method("l1_sparse").name == "FT_prune"
    assert unlearn.get_method("salun").name == "SalUn"
    assert unlearn.get_method("NegGrad+").name == "NG"


@pytest.mark.parametrize("args,flag", [
    (["--unlearn", "magic", "--class_to_replace", "3"], "--unlearn"),
    (["--unlearn", "FT"], "forget set is empty"),
    (["--unlearn", "FT", "--class_to_replace", "3", "--dataset", "cifar10"], "--dataset"),
    (["--unlearn", "FT", "--class_to_replace", "3", "--split_seed", "7"], "--split_seed"),
    (["--unlearn", "FT", "--class_to_replace", "12"], "--class_to_replace"),
    (["--unlearn", "FT", "--class_to_replace", "3", "--variant", "legacy"], "--variant"),
    (["--unlearn", "SalUn@rum", "--class_to_replace", "3", "--mask_lr", "-1"], "--mask_lr"),
    (["--unlearn", "FT_prune_bi", "--class_to_replace", "3", "--rate", "2"], "--rate"),
    (["--unlearn", "SalUn", "--class_to_replace", "3", "--rl_loop", "both"], "--rl_loop"),
])
def test_main_forget_bad_inputs(original, tmp_path, args, flag):
    res = run_main("main_forget.py", "--mask", original, "--save_dir", str(tmp_path / "x"), *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and flag in res.stderr and "Traceback" not in res.stderr


def test_main_forget_missing_model(tmp_path):
    res = run_main("main_forget.py", "--mask", str(tmp_path / "nope.pt"), "--unlearn", "FT", "--class_to_replace", "1")
    assert res.returncode == 2 and "does not exist" in res.stderr

"""A-AMU on digits: its MMD and rank transforms, one epoch forgets a class with unseen images drawn from the
held-out split (never the test set), FT's --amu_reg add-on, the clean refusal without held-out images, and the
condenser comparison script in its tiny mode."""
import json
import os
import sys

import numpy as np
import pytest
import torch

import datasets
import models
import training
import unlearn
from unlearn import a_amu
from unlearn.a_amu import mmd, soft_probit
from unlearn.common import Context
from utils import UsageError
import helpers
from helpers import ONE_THREAD, cfg_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS = 3


def run(script, *args, env=None):
    return helpers.run(script, *args, env={**ONE_THREAD, **(env or {})})


@pytest.fixture(scope="module")
def original(digits_original_regun):
    """A ConvNet trained on the digits regun split: its held-out 10% was never trained on."""
    return digits_original_regun


@pytest.fixture(scope="module")
def regun_digits():
    return datasets.load_data("digits", device="cpu", split_seed=1, split="regun")


def context(data, forget_idx, batch_size=64):
    retain = np.setdiff1d(data.train_idx, forget_idx)
    return Context(retain=data.loader(retain, train=True, batch_size=batch_size),
                   forget=data.loader(forget_idx, train=True, batch_size=batch_size, seed=1),
                   heldout=data.loader(data.heldout_idx, train=True, augment=None, batch_size=batch_size, seed=2),
                   num_classes=10, device=torch.device("cpu"), make_model=None)


def accuracy(model, data, idx):
    return training.evaluate(model, data.loader(idx))["acc"]


def test_mmd_is_zero_for_identical_sets_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(256, generator=g) * 3
    assert mmd(a, a.clone()).item() == 0.0
    assert mmd(soft_probit(a), soft_probit(a.clone())).item() == 0.0
    assert mmd(a, a + 0.5).item() > 1e-3 and mmd(a, a[:64]).item() > 0
    assert mmd(soft_probit(a), soft_probit(a * 5)).item() > 1e-3  # wider spread of log-losses


def test_legacy_rank_is_one_sided_and_default_two_sided():
    losses = torch.tensor([0.01, 0.2, 0.5, 1.0, 3.0, 8.0], requires_grad=True)
    legacy, default = soft_probit(losses, two_sided=False), soft_probit(losses)
    # legacy: relu makes every sigmoid >= 1/2, so F >= 1/2, z >= 0, and the smallest loss maps to exactly 0
    assert (legacy >= 0).all() and legacy[0].item() == 0.0
    # default: F_i + F_j pairs sum to one, so mean F = 1/2 and z takes both signs
    assert default.min() < 0 < default.max()
    assert torch.special.ndtr(default).mean().item() == pytest.approx(0.5, abs=1e-6)
    for z in (legacy, default):  # both keep the order of the losses, and stay differentiable
        assert (z.diff() > 0).all()
    default.sum().backward()
    assert torch.isfinite(losses.grad).all() and losses.grad.abs().sum() > 0


def test_one_epoch_forgets_a_class_with_unseen_images_from_the_heldout_split(original, regun_digits, monkeypatch):
    data = regun_digits
    forget = data.train_idx[data.y_train_np[data.train_idx] == CLASS]
    model, ctx = models.load_model(original, "cpu")[0], context(data, forget)
    before = accuracy(model, data, forget)
    drawn = []
    real_gather = a_amu.gather
    monkeypatch.setattr(a_amu, "gather", lambda loader, rows: drawn.append(rows.clone()) or real_gather(loader, rows))
    model = unlearn.get_method("A_AMU").run(model, ctx, cfg_for("A_AMU"))
    after = accuracy(model, data, forget)
    assert after < before - 3, (before, after)
    assert len(ctx.history) == 1 and np.isfinite(ctx.history[0]["loss"])  # one epoch, as published
    # per step: the unseen batch (drawn first) comes from the held-out images only, with the forget batch's classes
    assert len(drawn) == 2 * len(ctx.retain)
    y, n_retain = data.y_train_np, len(ctx.retain.indices)
    sizes = [min(64, n_retain - start) for start in range(0, n_retain, 64)]  # the last retain batch is smaller
    for unseen, forgotten, b in zip(drawn[::2], drawn[1::2], sizes):
        assert np.isin(unseen.numpy(), data.heldout_idx).all() and np.isin(forgotten.numpy(), forget).all()
        assert len(forgotten) == min(4 * b, len(forget))  # forget and unseen batches: 4x the retain batch
        assert np.array_equal(np.bincount(y[unseen.numpy()], minlength=10), np.bincount(y[forgotten.numpy()], minlength=10))


def test_ft_amu_reg_runs_and_changes_ft(original, regun_digits):
    data = regun_digits
    rng = np.random.default_rng(0)
    forget = np.sort(rng.choice(data.train_idx, 100, replace=False))
    params = {}
    for reg in (0.0, 34.0):
        model, ctx = models.load_model(original, "cpu")[0], context(data, forget)
        model = unlearn.get_method("FT").run(model, ctx, cfg_for("FT", unlearn_lr=0.01, unlearn_epochs=1,
                                                                 amu_reg=reg))
        params[reg] = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert np.isfinite(ctx.history[0]["loss"])
    assert not torch.equal(params[0.0], params[34.0])


def test_flags_and_published_defaults():
    from unlearn.setup import add_unlearn_args
    from utils import make_parser
    assert unlearn.get_method("A_AMU").defaults == {
        "unlearn_lr": 2.4e-4, "unlearn_epochs": 1, "batch_size": 64, "weight_decay": 0.0, "amu_reg": 34.0,
        "amu_k": 2.0, "amu_kappa": 60.0, "amu_ratio": 4}
    assert unlearn.get_method("FT").defaults["amu_reg"] == 0.0 and unlearn.get_method("a_amu").variants == (
        "default", "legacy")
    p = make_parser("")
    add_unlearn_args(p)
    args = p.parse_args(["--amu_reg", "5", "--amu_k", "3", "--amu_kappa", "9", "--amu_ratio", "2"])
    assert (args.amu_reg, args.amu_k, args.amu_kappa, args.amu_ratio) == (5.0, 3.0, 9.0, 2)


def test_without_heldout_images_exit_2_with_one_line(original, regun_digits, tmp_path):
    record = torch.load(original, weights_only=True)
    record["split"] = {"name": "val10", "seed": 1}  # the default split: no held-out part
    torch.save(record, tmp_path / "val10.pt")
    res = run("main_forget.py", "--mask", str(tmp_path / "val10.pt"), "--unlearn", "A_AMU", "--class_to_replace", "3",
              "--save_dir", str(tmp_path / "x"), "--quiet")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "--split" in res.stderr and "regun" in res.stderr
    ctx = context(regun_digits, regun_digits.train_idx[:50])  # FT's add-on refuses alike, in-process
    ctx.heldout = None
    with pytest.raises(UsageError, match="--split"):
        unlearn.get_method("FT").run(models.load_model(original, "cpu")[0], ctx, cfg_for("FT", amu_reg=1.0))


@pytest.mark.slow
def test_compare_condensers_tiny_writes_one_table_with_costs_and_a_scatter(original, tmp_path):
    root = tmp_path / "cc"
    res = run("scripts/compare_condensers.sh", "--tiny",
              env={"MODEL": original, "ROOT": str(root), "PYTHON": sys.executable})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = (root / "table.md").read_text()
    for header in ("Avg.Gap", "offline (s)", "per request (s)", "total (s)"):
        assert header in table
    for row in ("none", "retrain", "FT [weighted]", "A_AMU [weighted]", "FT [random]"):
        assert f"| {row} |" in table, table
    assert (root / "scatter.png").stat().st_size > 0
    # the WDD set's making (buffer + distillation) is offline work; the three costs add up to the total
    m = json.load(open(root / "seed1" / "weighted-FT" / "results.json"))["metrics"]
    assert m["offline_s"] > 0 and m["request_s"] >= m["prep_s"] > 0 and "avg_gap" in m
    aamu = json.load(open(root / "seed1" / "weighted-A_AMU" / "results.json"))
    assert aamu["config"]["unlearn"] == "A_AMU" and aamu["config"]["forget_source"] == "real"

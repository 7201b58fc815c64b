"""Presets (method@rum, method@regun) and the released behaviours they select: how flags resolve, SalUn's mask
variants, RL's loops, ReGUn's retain subset and l1 schedule, BE's shadow head. Tiny models on tiny tensors, in
this process: each test takes well under a second."""
import types

import numpy as np
import pytest
import torch

import unlearn
from datasets import Batch, DeviceLoader
from unlearn.common import Context
from unlearn.l1_sparse import l1_coefficient
from unlearn.rl import random_labels
from unlearn.run import real_loaders
from unlearn.salun import MASK_RULES, keep_top, saliency_mask, saliency_scores
from unlearn.setup import add_unlearn_args, method_config
from utils import UsageError, add_common_args, make_parser

K = 3  # classes


def config(*argv):
    """method_config's cfg for a main_forget.py command line."""
    p = make_parser("")
    add_unlearn_args(p)
    add_common_args(p)
    return method_config(p.parse_args(list(argv)), {})[1]


def tiny_context(n=48, n_forget=12, batch_size=8):
    """Retain and forget loaders over one table of random 1x4x4 images (crop-like augmentation on both)."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, K, (n,), generator=g)
    flip = lambda x, generator=None: x.flip(-1)  # stands for crop+flip: a marker that both loaders share
    forget, retain = np.arange(n_forget), np.arange(n_forget, n)
    return Context(retain=DeviceLoader(images, labels, retain, batch_size=batch_size, shuffle=True, augment=flip),
                   forget=DeviceLoader(images, labels, forget, batch_size=batch_size, shuffle=True, augment=flip,
                                       seed=1),
                   num_classes=K, device=torch.device("cpu"), make_model=None)


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, K))


def spy_epochs(ctx):
    """Replace ctx.train_epoch by a recorder: one list of the batches served per call, no training."""
    seen = []

    def record(model, loader, opt, desc="", **kw):
        seen.append((loader, list(loader)))
        return {"loss": torch.zeros(())}

    ctx.train_epoch = record
    return seen


# ---------------------------------------------------------------------------------------------------------
# How flags resolve: the user's, else the preset's, else the method's, else False / "default"

def test_presets_fill_what_the_user_left_and_the_user_wins():
    cfg = config("--unlearn", "SalUn@rum")
    assert (cfg.mask_variant, cfg.rl_loop, cfg.variant, cfg.no_aug) == ("rum", "joint", "legacy", True)
    assert (cfg.unlearn_lr, cfg.unlearn_epochs, cfg.batch_size, cfg.weight_decay) == (0.1, 10, 256, 5e-4)
    cfg = config("--unlearn", "SalUn@rum", "--no_aug", "False", "--mask_variant", "default", "--unlearn_epochs", "5",
                 "--variant", "default")
    assert (cfg.no_aug, cfg.mask_variant, cfg.unlearn_epochs, cfg.variant) == (False, "default", 5, "default")
    cfg = config("--unlearn", "SalUn")  # no preset: the method's defaults, then the fallbacks
    assert (cfg.no_aug, cfg.variant, cfg.mask_variant, cfg.rl_loop) == (False, "default", "default", "sequential")
    cfg = config("--unlearn", "SalUn@regun")
    assert (cfg.mask_variant, cfg.rl_loop, cfg.rl_labels, cfg.retain_weight, cfg.weight_decay, cfg.batch_size) == (
        "regun", "paired", "not_true", 0.5, 0.0, 128)
    assert config("--unlearn", "SCRUB").no_aug is True and config("--unlearn", "scrub@regun").no_aug is False
    assert config("--unlearn", "SCRUB", "--no_aug").no_aug is True  # a bare switch still means True
    cfg = config("--unlearn", "FT_prune@regun")
    assert (cfg.retain_subset, cfg.l1_schedule, cfg.alpha, cfg.unlearn_epochs) == (True, "regun", 5e-4, 10)
    cfg = config("--unlearn", "NG@rum")
    assert (cfg.alpha, cfg.epoch_over, cfg.no_aug, cfg.unlearn_epochs) == (0.99, "retain", True, 5)
    assert config("--unlearn", "BE", "--variant", "keep_shadow").variant == "keep_shadow"  # the old name stays
    assert config("--unlearn", "none").no_aug is False
    with pytest.raises(UsageError, match="--rl_loop"):
        config("--unlearn", "RL", "--rl_loop", "interleaved")
    with pytest.raises(UsageError, match="--variant"):
        config("--unlearn", "FT@rum", "--variant", "legacy")


def test_loaders_follow_the_resolved_no_aug():
    built = []
    data = types.SimpleNamespace(loader=lambda idx, **kw: built.append(kw))
    for argv, augmented in ((("--unlearn", "SalUn@rum"), False), (("--unlearn", "SalUn@rum", "--no_aug", "0"), True)):
        built.clear()
        run = types.SimpleNamespace(args=types.SimpleNamespace(no_aug=None), cfg=config(*argv), data=data,
                                    retain_idx=None, forget_idx=None)
        real_loaders(run, seed=0)
        assert len(built) == 2 and all(("augment" not in kw) == augmented for kw in built), (argv, built)


# ---------------------------------------------------------------------------------------------------------
# SalUn's mask variants

def test_mask_rankings_keep_largest_rounded_or_smallest_floored():
    scores = {"a": torch.tensor([0.1, 0.4, 0.3]), "b": torch.tensor([0.2, 0.5])}  # P = 5, ratio 0.3: 1.5 entries
    default = keep_top(scores, 0.3, MASK_RULES["default"])  # round(1.5) = 2 largest: 0.5 and 0.4
    assert default["a"].tolist() == [False, True, False] and default["b"].tolist() == [False, True]
    for variant in ("rum", "first_commit", "legacy"):  # floor(1.5) = 1 smallest: 0.1
        kept = keep_top(scores, 0.3, MASK_RULES[variant])
        assert kept["a"].tolist() == [True, False, False] and kept["b"].tolist() == [False, False], variant


def cancelling_batches():
    """Two one-image batches whose forget-loss gradients cancel at a zero linear model: at logits (0, 0) the
    gradient of -CE w.r.t. the weights is (+0.5, -0.5) for label 0 and (-0.5, +0.5) for label 1."""
    x = torch.ones(1, 1)
    return [Batch(x, torch.tensor([0]), None, None), Batch(x, torch.tensor([1]), None, None)]


@pytest.mark.parametrize("variant,lr,expected", [
    ("default", 0.0, 0.0),                         # |g1 + g2| at the original
    ("rum", 0.0, 0.0),                             # signed sum too ...
    ("first_commit", 0.0, 1.0),                    # ... but the first commit summed |g1| + |g2|
    ("rum", 1.0, 0.5 - 1 / (1 + np.e)),           # the ascent step moves the model before batch 2: W = (-.5, .5)
    ("default", 1.0, 0.0),                         # no step: the lr is unused
])
def test_mask_scores_accumulate_as_each_release(variant, lr, expected):
    model = torch.nn.Linear(1, 2, bias=False)
    torch.nn.init.zeros_(model.weight)
    scores = saliency_scores(model, cancelling_batches(), MASK_RULES[variant], lr=lr, momentum=0.0, weight_decay=0.0)
    assert torch.allclose(scores["weight"], torch.full((2, 1), expected), atol=1e-6)
    assert torch.count_nonzero(model.weight) == 0  # the ascent steps ran on a copy


def test_step_variants_leave_the_original_and_its_mode_alone():
    model, ctx = tiny_model(), tiny_context()
    before = [p.detach().clone() for p in model.parameters()]
    model.eval()
    masks = saliency_mask(model, ctx.forget, 0.5, "first_commit", lr=0.5)
    assert not model.training and all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert sum(int(m.sum()) for m in masks.values()) == sum(b.numel() for b in before) // 2


# ---------------------------------------------------------------------------------------------------------
# RL's loops

def test_joint_loop_serves_every_sample_once_per_epoch_with_fresh_forget_labels():
    ctx = tiny_context()
    seen = spy_epochs(ctx)
    cfg = config("--unlearn", "RL@rum", "--unlearn_epochs", "2", "--batch_size", "8")
    unlearn.get_method("RL").run(tiny_model(), ctx, cfg)
    assert len(seen) == 2  # one pass per epoch
    true, forget = ctx.retain.labels, set(ctx.forget.indices.tolist())
    drawn = []
    for loader, batches in seen:
        assert loader.augment is ctx.retain.augment and loader.shuffle
        rows = torch.cat([b.index for b in batches])
        labels = torch.cat([b.y for b in batches])
        assert sorted(rows.tolist()) == sorted(forget | set(ctx.retain.indices.tolist()))  # each exactly once
        is_forget = torch.tensor([r in forget for r in rows.tolist()])
        assert torch.equal(labels[~is_forget], true[rows[~is_forget]])
        assert (labels[is_forget] != true[rows[is_forget]]).any() and labels.max() < K
        drawn.append(dict(zip(rows[is_forget].tolist(), labels[is_forget].tolist())))
    assert drawn[0] != drawn[1]  # new labels every epoch


def test_paired_loop_stops_with_the_shorter_loader_and_never_draws_the_true_label():
    ctx = tiny_context()
    seen = spy_epochs(ctx)
    cfg = config("--unlearn", "SalUn@regun", "--unlearn_epochs", "1")
    unlearn.get_method("SalUn").run(tiny_model(), ctx, cfg)
    (_, pairs), = seen
    assert len(pairs) == min(len(ctx.forget), len(ctx.retain)) == 2
    assert all(f.index.max() < 12 <= r.index.min() for f, r in pairs)  # (forget, retain) in that order
    y = torch.arange(K).repeat(200)
    drawn = random_labels(y, K, torch.Generator().manual_seed(0), "not_true")
    assert (drawn != y).all() and set(drawn.tolist()) == set(range(K))


def test_salun_regun_leaves_masked_out_weights_exactly_at_the_original():
    model, ctx = tiny_model(), tiny_context()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = config("--unlearn", "SalUn@regun", "--unlearn_epochs", "3", "--unlearn_lr", "0.5", "--weight_decay", "0.1")
    masks = saliency_mask(model, ctx.forget, 0.5, "regun")
    unlearn.get_method("SalUn").run(model, ctx, cfg)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n][~m], before[n][~m]) for n, m in masks.items())  # bitwise, weight decay too
    assert any(not torch.equal(params[n][m], before[n][m]) for n, m in masks.items())


# ---------------------------------------------------------------------------------------------------------
# ReGUn's retain subset and l1 schedule; BE's released head

def test_ft_regun_trains_on_a_fixed_retain_subset_as_large_as_the_forget_set():
    ctx = tiny_context()
    seen = spy_epochs(ctx)
    unlearn.get_method("FT").run(tiny_model(), ctx, config("--unlearn", "FT@regun"))
    assert len(seen) == 2  # FT@regun: 2 epochs
    subsets = [sorted(torch.cat([b.index for b in batches]).tolist()) for _, batches in seen]
    assert len(subsets[0]) == len(ctx.forget.indices) and subsets[0] == subsets[1]
    assert set(subsets[0]) <= set(ctx.retain.indices.tolist())
    assert seen[0][0].augment is ctx.retain.augment


def test_regun_l1_schedule_decays_from_1_8_gamma_to_zero():
    coefs = [l1_coefficient(5e-4, e, 10, schedule="regun") for e in range(10)]
    assert np.allclose(coefs, 5e-4 * np.array([1.8, 1.6, 1.4, 1.2, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]))
    assert l1_coefficient(5e-4, 0, 10) == 5e-4  # Unlearn-Sparse's stays the default


@pytest.mark.parametrize("variant,outputs", [("default", K), ("legacy", K + 1), ("keep_shadow", K + 1)])
def test_be_legacy_keeps_the_shadow_class(variant, outputs):
    model, ctx = tiny_model(), tiny_context()
    cfg = config("--unlearn", "BE", "--variant", variant, "--unlearn_epochs", "1")
    model = unlearn.get_method("BE").run(model, ctx, cfg)
    assert model(torch.rand(2, 1, 4, 4)).shape == (2, outputs)

"""Issue-10 methods on digits (SSD, SCRUB, BS, BE, SalUn-soft, FF, IU; NG's --epoch_over, SalUn's first-commit mask):
each does what its name says, and main_forget.py takes them, their presets and rejects bad input cleanly."""
import copy
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import models
import training
import unlearn
from unlearn import amun, boundary, common, ff, iu, lur, scrub, ssd
from unlearn.common import Context, FrozenTeacher
from unlearn.salun_soft import soft_threshold_
import helpers
from helpers import ONE_THREAD, cfg_for

CLASS = 3


def run(script, *args):
    return helpers.run(script, *args, env=ONE_THREAD)


@pytest.fixture(scope="module")
def original(digits_original):
    """A ConvNet trained on the digits train split (it has seen every forget sample)."""
    return digits_original


def load(original):
    return models.load_model(original, "cpu")[0]


def classwise(digits, batch_size=64, forget_cap=None):
    """Context for forgetting class CLASS; `forget_cap` keeps only the first forget samples (speed)."""
    y = digits.y_train_np
    forget = digits.train_idx[y[digits.train_idx] == CLASS]
    retain = np.setdiff1d(digits.train_idx, forget)
    forget = forget[:forget_cap] if forget_cap else forget
    return Context(retain=digits.loader(retain, train=True, batch_size=batch_size),
                   forget=digits.loader(forget, train=True, batch_size=batch_size, seed=1), num_classes=10,
                   device=torch.device("cpu"), make_model=None, forget_classes=[CLASS])


def class_acc(model, digits, cls=CLASS, test=True):
    y = (digits.y_test if test else digits.y_train).cpu().numpy()
    idx = np.where(y == cls)[0] if test else digits.train_idx[y[digits.train_idx] == cls]
    return training.evaluate(model, digits.loader(idx, test=test))["acc"]


# ---------------------------------------------------------------------------------------------------------
# SSD

def test_ssd_dampens_only_selected_weights_and_never_grows_one(original, digits):
    model, ctx = load(original), classwise(digits)
    cfg = cfg_for("SSD", ssd_importance="batch", ssd_alpha=9.0, ssd_lambda=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget_imp, full_imp = ssd.importances(model, ctx, cfg)
    unlearn.get_method("SSD").run(model, ctx, cfg)
    selected_any = False
    for n, p in model.named_parameters():
        selected = forget_imp[n] > cfg.ssd_alpha * full_imp[n]
        selected_any |= bool(selected.any())
        assert torch.equal(p[~selected], before[n][~selected]), n        # below alpha x overall: untouched
        assert (p.abs() <= before[n].abs()).all(), n                        # never grows
        beta = torch.clamp(cfg.ssd_lambda * full_imp[n] / forget_imp[n], max=1)
        assert torch.allclose(p[selected], (before[n] * beta)[selected]), n
    assert selected_any


def test_ssd_sample_estimator_is_the_mean_squared_per_sample_gradient(original, digits):
    model = load(original)
    loader = digits.loader(digits.train_idx[:20], batch_size=7)
    imp = ssd.sample_importance(model.eval(), [loader])
    name, p = next(iter(model.named_parameters()))
    ref = torch.zeros_like(p)
    for i in digits.train_idx[:20]:
        x, y = digits.x_train[i:i + 1].float() / 255, digits.y_train[i:i + 1]
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), [p])
        ref += g ** 2 / 20
    assert torch.allclose(imp[name], ref, rtol=1e-4, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# SCRUB

def test_scrub_teacher_is_bitwise_unchanged_and_only_the_student_is_optimised(original, digits, monkeypatch):
    model, ctx = load(original), classwise(digits, forget_cap=64)
    reference = copy.deepcopy(model.state_dict())
    teachers, optimizers = [], []

    class Spy(FrozenTeacher):
        def __init__(self, m):
            super().__init__(m)
            teachers.append(self)

        def __call__(self, x):
            self.model.train()  # even if something flips it to train mode, every call runs it in eval mode
            out = super().__call__(x)
            assert not self.model.training
            return out

    def spy_sgd(m, cfg, weight_decay=None):
        opt = common.sgd(m, cfg, weight_decay)
        optimizers.append(opt)
        return opt

    monkeypatch.setattr(scrub, "FrozenTeacher", Spy)
    monkeypatch.setattr(scrub, "sgd", spy_sgd)
    cfg = cfg_for("SCRUB", unlearn_lr=0.05, unlearn_epochs=2, msteps=1, forget_batch_size=32)
    unlearn.get_method("SCRUB").run(model, ctx, cfg)
    (teacher,), (opt,) = teachers, optimizers
    for k, v in teacher.model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.parameters()}
    assert not optimised & {id(p) for p in teacher.model.parameters()}
    assert any(not torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_scrub_lr_decay_follows_scrub():
    assert [scrub.decay_factor(e, [3, 5, 9]) for e in (1, 3, 4, 6, 10)] == pytest.approx([1, 1, 0.1, 0.01, 1e-3])


# ---------------------------------------------------------------------------------------------------------
# BS and BE

def test_bs_labels_are_the_original_models_prediction_on_the_fgsm_image(original, digits, monkeypatch):
    model, ctx = load(original), classwise(digits, forget_cap=64)
    f0 = copy.deepcopy(model).eval()
    calls = []
    real = boundary.fgsm_nearest_labels

    def spy(teacher, x, y, eps):
        x_adv, labels = real(teacher, x, y, eps)
        calls.append((x.clone(), y.clone(), labels.clone()))
        return x_adv, labels

    monkeypatch.setattr(boundary, "fgsm_nearest_labels", spy)
    cfg = cfg_for("BS", unlearn_lr=0.05, unlearn_epochs=2, bs_eps=0.3)
    unlearn.get_method("BS").run(model, ctx, cfg)
    assert len(calls) == 2 * len(ctx.forget)
    for x, y, labels in calls:  # recomputed independently with the original weights, however far the model moved
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(f0(x), y), [x])
        x_adv = torch.round(torch.clamp(x.detach() + 0.3 * g.sign(), 0, 1) * 255) / 255
        assert torch.equal(labels, f0(x_adv).argmax(1))
    assert any((labels != y).any() for _, y, labels in calls)


@pytest.mark.parametrize("variant,outputs", [("default", 10), ("legacy", 11)])
def test_be_returns_the_original_number_of_outputs(original, digits, variant, outputs):
    model, ctx = load(original), classwise(digits, forget_cap=64)
    head_before = model.classifier.weight.detach().clone()
    cfg = cfg_for("BE", unlearn_lr=0.01, unlearn_epochs=1, variant=variant)
    model = unlearn.get_method("BE").run(model, ctx, cfg)
    x = next(iter(ctx.forget)).x
    assert model(x).shape == (len(x), outputs)
    assert model.classifier.weight.shape[0] == outputs
    assert not torch.equal(model.classifier.weight[:10], head_before)  # the kept rows were trained


# ---------------------------------------------------------------------------------------------------------
# SalUn-soft

def test_soft_threshold_resets_small_moves_and_shrinks_the_rest():
    anchor = [torch.zeros(6)]
    p = [torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5, 1.0])]
    soft_threshold_(p, anchor, k=2)  # tau = 0.2
    assert torch.allclose(p[0], torch.tensor([0.0, 0.0, 0.1, -0.2, 0.3, 0.8]))


# ---------------------------------------------------------------------------------------------------------
# FF

def test_ff_classwise_drives_the_forgotten_class_down(original, digits):
    model, ctx = load(original), classwise(digits)
    ctx.retain = digits.loader(ctx.retain.indices.numpy()[::3], train=True)  # a third of the retain set (speed)
    before = class_acc(model, digits)
    model = unlearn.get_method("FF").run(model, ctx, cfg_for("FF"))
    assert before > 90 and class_acc(model, digits) < 10
    others = [class_acc(model, digits, c) for c in range(10) if c != CLASS]
    assert np.mean(others) > 85


def test_ff_zeroes_rows_only_when_classwise_unless_legacy(original, digits):
    ctx = classwise(digits)
    assert ff.forget_rows(ctx, cfg_for("FF")) == [CLASS]
    ctx.forget_classes = None  # random forgetting
    assert ff.forget_rows(ctx, cfg_for("FF", class_to_replace="-1")) == []
    # legacy: the released count rule, row --class_to_replace at exactly 4500 (CIFAR-10) / 450 (CIFAR-100) forgotten
    def legacy_rows(n, dataset, cls="-1", classes=None):
        fake = SimpleNamespace(forget=SimpleNamespace(indices=torch.arange(n)), forget_classes=classes)
        return ff.forget_rows(fake, cfg_for("FF", class_to_replace=cls, variant="legacy", dataset=dataset))
    assert legacy_rows(4500, "cifar10") == [-1]  # random 10%: the last class's row, as released
    assert legacy_rows(450, "cifar100", "7") == [7]
    assert legacy_rows(4499, "cifar10") == [] and legacy_rows(450, "cifar10") == [] and legacy_rows(4500, "svhn") == []
    assert legacy_rows(len(ctx.forget.indices), "digits", str(CLASS), [CLASS]) == []  # class-wise, other count


def test_ff_fisher_matches_the_per_class_loop(original, digits):
    model = load(original).eval()
    loader = digits.loader(digits.train_idx[:40], batch_size=20)
    fisher, ref = ff.class_fisher(model, loader, 10), ff.class_fisher_loop(model, loader, 10)
    assert fisher.keys() == ref.keys()
    for name in fisher:  # every tensor, BatchNorm and classifier alike
        assert torch.allclose(fisher[name], ref[name], rtol=1e-4, atol=1e-12), name


# ---------------------------------------------------------------------------------------------------------
# IU

def tiny_logistic_setup(digits):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(5)
    y = digits.y_train_np
    forget = digits.train_idx[y[digits.train_idx] == CLASS][:30]
    retain = np.setdiff1d(digits.train_idx, forget)[:300]
    ctx = Context(retain=digits.loader(retain, train=True, batch_size=64),
                  forget=digits.loader(forget, train=True, batch_size=64), num_classes=10,
                  device=torch.device("cpu"), make_model=None)
    return model, ctx, retain


def test_iu_default_step_is_the_damped_inverse_hessian_vector_product(digits):
    model, ctx, retain = tiny_logistic_setup(digits)
    cfg = cfg_for("IU", iu_damping=0.1, iu_cg_steps=300, iu_hvp_samples=200)
    k = iu.iu_step(model, ctx, cfg)
    v = iu.influence_vector(model, ctx)
    x = digits.x_train[retain[:200]].float() / 255
    y = digits.y_train[retain[:200]]
    w0, b0 = model[1].weight.detach(), model[1].bias.detach()

    def loss(flat):
        w, b = flat[:640].view(10, 64), flat[640:]
        return torch.nn.functional.cross_entropy(x.flatten(1) @ w.T + b, y)

    H = torch.autograd.functional.hessian(loss, torch.cat([w0.flatten(), b0])).double()
    direct = torch.linalg.solve(H + 0.1 * torch.eye(len(H), dtype=H.dtype), v.double())
    assert torch.allclose(k.double(), direct, rtol=1e-3, atol=1e-6 * direct.abs().max().item())


def test_iu_legacy_is_a_rank_one_correction_along_the_first_retain_gradient(digits):
    model, ctx, retain = tiny_logistic_setup(digits)
    k = iu.iu_step(model, ctx, cfg_for("IU", variant="legacy"))
    v = iu.influence_vector(model, ctx)
    x0, y0 = digits.x_train[retain[:1]].float() / 255, digits.y_train[retain[:1]]
    g0 = torch.cat([g.flatten() for g in torch.autograd.grad(
        torch.nn.functional.cross_entropy(model(x0), y0), list(model.parameters()))])
    d = k - v
    c = (d @ g0) / (g0 @ g0)
    assert d.norm() > 0 and (d - c * g0).norm() <= 1e-4 * d.norm()


# ---------------------------------------------------------------------------------------------------------
# NG's --epoch_over, SalUn's first-commit mask

@pytest.mark.parametrize("over", ["retain", "forget"])
def test_ng_epoch_is_one_pass_over_the_chosen_set(original, digits, over):
    model, ctx = load(original), classwise(digits, forget_cap=64, batch_size=32)
    cfg = cfg_for("NG", unlearn_lr=1e-3, unlearn_epochs=1, epoch_over=over)
    steps = []
    real = ctx.train_epoch

    def counting(m, loader, opt, desc="", **kw):
        pairs = list(loader)
        steps.append(len(pairs))
        return real(m, pairs, opt, desc, **kw)

    ctx.train_epoch = counting
    unlearn.get_method("NG").run(model, ctx, cfg)
    assert steps == [len(ctx.retain) if over == "retain" else len(ctx.forget)]


def test_salun_first_commit_mask_keeps_the_smallest_train_mode_gradients(original, digits):
    from unlearn.salun import saliency_mask
    model, ctx = load(original), classwise(digits)
    one_batch = [next(iter(ctx.forget))]
    masks = saliency_mask(model, one_batch, 0.3, "first_commit", lr=0.0, momentum=0.9, weight_decay=0.0)
    drift = copy.deepcopy(model).train()
    loss = -common.ce(drift, one_batch[0])
    grads = torch.autograd.grad(loss, list(drift.parameters()))
    scores = {n: g.abs() for (n, _), g in zip(drift.named_parameters(), grads)}
    kept = torch.cat([scores[n][masks[n]] for n in masks])
    dropped = torch.cat([scores[n][~masks[n]] for n in masks])
    assert kept.max() <= dropped.min()
    assert len(kept) == int(0.3 * (len(kept) + len(dropped)))  # the release's int(): floor


# ---------------------------------------------------------------------------------------------------------
# Amun, LUR

def test_amun_adversarial_labels_differ_from_the_truth_where_found(original, digits, tmp_path, monkeypatch):
    model, ctx = load(original), classwise(digits, forget_cap=24)
    ctx.save_dir = str(tmp_path)
    cfg = cfg_for("Amun", amun_steps=20, amun_cache=None)
    adv = amun.adversarial_set(model, ctx, cfg)
    x = digits.x_train[ctx.forget.indices].float() / 255
    y = digits.y_train[ctx.forget.indices]
    found = adv["found"]
    assert found.any()
    assert (adv["labels"][found] != y[found]).all() and torch.equal(adv["labels"][~found], y[~found])
    assert torch.equal(adv["images"][~found], x[~found])
    with torch.no_grad():
        assert torch.equal(model.eval()(adv["images"][found]).argmax(1), adv["labels"][found])
    mean, std = amun.normalisation(model)
    radius = ((adv["images"] - x) / std).flatten(1).norm(dim=1)
    assert (radius <= cfg.amun_eps * 2 ** (cfg.amun_rounds - 1) * (1 + 1e-4)).all()
    assert ((adv["images"] >= 0) & (adv["images"] <= 1 + 1e-6)).all()
    # cached atomically under a key of everything that determines it: a second call computes nothing
    assert len(list(tmp_path.glob("amun_adv_*.pt"))) == 1
    monkeypatch.setattr(amun, "min_radius_adversarial", lambda *a, **k: pytest.fail("recomputed"))
    again = amun.adversarial_set(model, ctx, cfg)
    assert torch.equal(again["labels"], adv["labels"])
    assert amun.cache_key(model, ctx.forget.indices, cfg_for("Amun", amun_steps=21)) != \
        amun.cache_key(model, ctx.forget.indices, cfg)


def test_lur_reinitialises_the_most_salient_weights_and_never_norm_layers(original, digits):
    model = load(original)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = next(iter(classwise(digits).forget))
    eligible = lur.eligible_parameters(model, 10)
    assert not any("features.1" in n or "features.5" in n for n in eligible)  # GroupNorm affine stays out
    count = lur.snip_reinit(model, batch, 0.99, 10, torch.Generator().manual_seed(0))
    total = sum(p.numel() for p in eligible.values())
    assert abs(count - 0.01 * total) <= 2
    changed = sum(int((p != before[n]).sum()) for n, p in model.named_parameters())
    assert 0 < changed <= count
    for n, p in model.named_parameters():
        if n not in eligible:
            assert torch.equal(p, before[n]), n
    assert lur.auto_sparsity(10, 0.1) == 0.97 and lur.auto_sparsity(100, 0.3) == pytest.approx(0.945)


# ---------------------------------------------------------------------------------------------------------
# Through main_forget.py: every method forgets class 3 within a sensible RA; presets; bad input

def forget_run(original, out, method, *extra):
    res = run("main_forget.py", "--mask", original, "--unlearn", method, "--save_dir", str(out), "--quiet",
              "--mia_jobs", "1", "--batch_size", "64", "--class_to_replace", str(CLASS), *extra)
    assert res.returncode == 0, res.stderr
    return json.load(open(os.path.join(out, "results.json")))


@pytest.fixture(scope="module")
def baseline_ua(original, tmp_path_factory):
    res = forget_run(original, tmp_path_factory.mktemp("none"), "none")
    return res["metrics"]["UA"]


@pytest.mark.parametrize("method,extra", [
    ("ssd@regun", ["--ssd_alpha", "3"]),  # per-sample importance: alpha must stay below n / n_f (about 10 here)
    ("scrub@regun", ["--unlearn_epochs", "2", "--unlearn_lr", "0.05"]),
    ("BS", ["--bs_eps", "0.3", "--unlearn_lr", "0.01", "--unlearn_epochs", "2"]),  # 8x8 digits: 0.1 barely moves
    ("BE", ["--unlearn_lr", "0.01", "--unlearn_epochs", "2"]),
    ("RL_proximal", ["--unlearn_epochs", "2"]),
    ("FF", []),
    # alpha 1 (the first-order estimate) sits on an edge here: UA 16% or 100% by the last bits of the original's
    # weights (torch version, threads); 3 is inside SalUn's searched range [1, 20] and forgets with margin.
    ("wfisher", ["--iu_hvp_samples", "512", "--iu_cg_steps", "20", "--alpha", "3"]),
])
def test_every_method_forgets_a_class_within_a_sensible_ra(original, baseline_ua, tmp_path, method, extra):
    res = forget_run(original, tmp_path / "run", method, *extra)
    m = res["metrics"]
    assert m["UA"] > baseline_ua + 50 and m["RA"] > 90, m
    cfg = res["config"]
    assert cfg["unlearn"] == unlearn.get_method(method).name
    if method == "scrub@regun":  # the preset is recorded, its values filled in, the user's flags kept
        assert cfg["preset"] == "regun" and cfg["weight_decay"] == 0 and cfg["kd_T"] == 4
        assert cfg["unlearn_lr"] == 0.05 and cfg["batch_size"] == 64
    if method == "ssd@regun":
        assert cfg["ssd_importance"] == "sample" and res["history"][0]["edited_fraction"] > 0


@pytest.mark.parametrize("args,flag", [
    (["--unlearn", "BE", "--variant", "nope"], "--variant"),
    (["--unlearn", "scrub@nope"], "--unlearn"),
])
def test_bad_inputs_exit_2_with_one_line(original, tmp_path, args, flag):
    res = helpers.run_main("main_forget.py", "--mask", original, "--save_dir", str(tmp_path / "x"),
                           "--class_to_replace", "3", *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and flag in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_method_config_resolves_presets_and_checks_choices():
    from unlearn.setup import add_unlearn_args, method_config
    from utils import UsageError, add_common_args, make_parser

    def config(*argv):
        p = make_parser("")
        add_unlearn_args(p)
        add_common_args(p)
        return method_config(p.parse_args(list(argv)), {})[1]

    cfg = config("--unlearn", "scrub@rum", "--kd_T", "2")
    assert (cfg.unlearn, cfg.preset, cfg.unlearn_lr, cfg.msteps, cfg.kd_T) == ("SCRUB", "rum", 5e-3, 5, 2)
    cfg = config("--unlearn", "SCRUB")
    assert cfg.preset is None and cfg.kl_weight == 0.001 and cfg.forget_batch_size == 512
    cfg = config("--unlearn", "FF")  # one-shot: no epochs or lr needed
    assert cfg.alpha == 3e-8 and cfg.unlearn_epochs is None
    with pytest.raises(UsageError, match="--ssd_importance"):
        config("--unlearn", "SSD", "--ssd_importance", "fisher")
    with pytest.raises(UsageError, match="no preset"):
        config("--unlearn", "ssd@rum")

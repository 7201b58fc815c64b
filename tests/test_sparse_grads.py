"""A sparse model is its sub-network (issue 18): under Method.apply every pruned coordinate gets exactly zero
gradient, so IU and FF on a masked model do what they do on the same model re-parametrised with torch's pruning
(weight = weight_orig * mask, as Unlearn-Sparse runs them), and momentum never builds up at a pruned weight.
Tiny bias-free convnet, ~90% of its conv weights pruned at random, a few dozen random samples."""
import contextlib
import copy
import dataclasses

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import training
import unlearn
from datasets import DeviceLoader
from training import pruning
from unlearn import ff
from unlearn.common import Context, ce
from helpers import cfg_for


def tiny_net():
    # bias-free convs: torch's pruning then keeps the order of named_parameters, which FF's noise draws follow
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 10))


def sparse_setup():
    """(model with ~90% of its conv weights pruned and zeroed, its Context: 40 retain and 8 forget samples)."""
    torch.manual_seed(0)
    model = tiny_net()
    masks = pruning.random_masks(model, 0.9, torch.Generator().manual_seed(1))
    with torch.no_grad():  # x10: else the sparse random net is so flat that all its Fisher sits below FF's clamp
        for n in masks:
            model.get_parameter(n).mul_(10)
    training.apply_masks(model, masks)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 10, (48,), generator=g)
    ctx = Context(retain=DeviceLoader(x[:40], y[:40], batch_size=16),
                  forget=DeviceLoader(x[40:], y[40:], batch_size=16),
                  num_classes=10, device=torch.device("cpu"), make_model=None, masks=masks)
    return model, ctx


def sub_network(model, masks):
    """A copy re-parametrised as Unlearn-Sparse's pruned models are: weight = weight_orig * mask (a constant)."""
    ref = copy.deepcopy(model)
    for name, module in ref.named_modules():
        if f"{name}.weight" in masks:
            torch_prune.custom_from_mask(module, "weight", masks[f"{name}.weight"])
    return ref


def effective_state(ref):
    """The sub-network's state under the dense model's names: weight = weight_orig * weight_mask."""
    state = ref.state_dict()
    return {k.removesuffix("_orig"): v * state[k.replace("_orig", "_mask")] if k.endswith("_orig") else v
            for k, v in state.items() if not k.endswith("_mask")}


def assert_same_state(model, ref):
    """Bitwise: the masked model runs the very operations of the sub-network."""
    state = effective_state(ref)
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)


def max_difference(model, ref):
    state = effective_state(ref)
    return max((v - state[k]).abs().max().item() for k, v in model.state_dict().items() if v.is_floating_point())


# legacy IU: k = v - c g_0 with c = O(1 / 1000): masking changes its kept coordinates only by ~1e-8 here
@pytest.mark.parametrize("name,over,matters", [("IU", {}, True), ("IU", {"variant": "legacy"}, False),
                                               ("FF", {}, True)])
def test_method_on_a_masked_model_equals_it_on_the_sub_network(name, over, matters):
    model, ctx = sparse_setup()
    method, cfg = unlearn.get_method(name), cfg_for(name, **over)
    ref = method.apply(sub_network(model, ctx.masks), dataclasses.replace(ctx, masks=None), cfg)
    unmasked = method.run(copy.deepcopy(model), ctx, cfg)  # the old behaviour: only the weights masked
    model = method.apply(model, ctx, cfg)
    assert_same_state(model, ref)
    if matters:  # the gradients at pruned coordinates did change the result
        assert max_difference(unmasked, ref) > 1e-4


def test_ff_fisher_of_a_masked_model_is_the_sub_networks_on_both_paths():
    model, ctx = sparse_setup()
    loader = unlearn.common.plain_loader(ctx.retain, ff.FISHER_BATCH)
    ref = ff.class_fisher_loop(sub_network(model, ctx.masks), loader, 10)
    ref = {n.replace("weight_orig", "weight"): f for n, f in ref.items()}
    with training.masked_gradients(model, lambda: ctx.masks):
        loop = ff.class_fisher_loop(model, loader, 10)
    batched = ff.class_fisher(model, loader, 10, ctx.masks)  # functional_call: no hooks, masked weights instead
    assert loop.keys() == batched.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(loop[n], ref[n], rtol=0, atol=0, msg=n)
        torch.testing.assert_close(batched[n], ref[n], rtol=1e-4, atol=1e-12, msg=n)
    dense = ff.class_fisher_loop(model, loader, 10)  # no hooks
    for n, mask in ctx.masks.items():
        assert torch.all(batched[n][~mask] == 0) and batched[n][mask].any(), n
        assert dense[n][~mask].any(), n  # unmasked, a pruned weight has Fisher information


def test_momentum_stays_exactly_zero_at_pruned_weights():
    model, ctx = sparse_setup()
    bufs = {}
    for hooked in (True, False):
        net = copy.deepcopy(model)
        opt = training.build_optimizer(net.parameters(), 0.1, momentum=0.9, weight_decay=5e-4)
        with training.masked_gradients(net, lambda: ctx.masks) if hooked else contextlib.nullcontext():
            training.train_epoch(net, ctx.retain, opt, masks=ctx.masks)  # 3 steps, weights re-zeroed after each
        bufs[hooked] = {n: opt.state[p]["momentum_buffer"] for n, p in net.named_parameters()}
    for n, mask in ctx.masks.items():
        assert torch.all(bufs[True][n][~mask] == 0) and bufs[True][n][mask].abs().sum() > 0, n
        assert bufs[False][n][~mask].abs().sum() > 0, n  # without the hooks it builds up there


def test_apply_masks_the_model_and_made_models_with_the_current_masks_then_unhooks():
    model, ctx = sparse_setup()
    masks, ctx.masks = ctx.masks, None  # dense at the start; the masks appear mid-run, as FT_prune_bi's do
    make_model = ctx.make_model = tiny_net
    batch = next(iter(ctx.retain))

    def grads(net):
        net.zero_grad(set_to_none=True)
        ce(net.eval(), batch).backward()
        return {n: p.grad for n, p in net.named_parameters()}

    seen = {}

    def run(m, ctx, cfg):
        seen["dense"] = grads(m)
        ctx.masks = masks
        seen["model"], seen["made"] = grads(m), grads(ctx.make_model())
        return m

    method = dataclasses.replace(unlearn.get_method("FT_prune_bi"), run=run)  # a method that prunes as it runs
    assert method.apply(model, ctx, None) is model
    after = grads(model)
    for n, mask in masks.items():
        for key in ("model", "made"):
            assert torch.all(seen[key][n][~mask] == 0) and seen[key][n][mask].abs().sum() > 0, (key, n)
        assert seen["dense"][n][~mask].abs().sum() > 0 and after[n][~mask].abs().sum() > 0, n
    assert ctx.make_model is make_model


@pytest.mark.parametrize("variant", ["default", "rum", "first_commit"])
def test_saliency_scores_are_zero_at_pruned_weights(variant):
    """SalUn's saliency sees the sub-network too, also the variants that drift a copy with ascent steps (a deepcopy
    drops gradient hooks, so the copy gets its own)."""
    from unlearn import salun
    model, ctx = sparse_setup()
    cfg = cfg_for("SalUn", mask_variant=variant, unlearn_epochs=1, mask_path=None)
    seen = {}
    real = salun.keep_top
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(salun, "keep_top", lambda scores, *a: seen.update(scores) or real(scores, *a))
        unlearn.get_method("SalUn").apply(model, ctx, cfg)
    for n, mask in ctx.masks.items():
        assert seen[n][~mask].abs().max() == 0 and seen[n][mask].abs().max() > 0, n

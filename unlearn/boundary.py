"""Boundary unlearning (Chen et al., CVPR'23), as SalUn's baselines BE and BS ([U] unlearn/boundary_ex.py,
unlearn/boundary_sh.py). Both see only the forget set.

BS (boundary shrinking): a frozen copy f0 of the original model (eval mode) gives every forget image an FGSM
    step in pixel space, x_adv = round_255(clip(x + eps * sign(grad_x CE(f0(x), y)), 0, 1)) with eps = 0.1, and
    its nearest-boundary label y_nbi = argmax f0(x_adv) (not forced to differ from y). The model is then fine-
    tuned on the clean x with label y_nbi.
BE (boundary expanding): a (K+1)-th "shadow" output row is appended to the last Linear layer (old rows copied,
    the new one nn.Linear's default init) and the model is fine-tuned on the forget set with every label = K.
    The released code never removes the shadow row, so its evaluation ran on K+1 logits; the Boundary
    Unlearning paper prunes the shadow neuron. Default: the shadow row is removed before the model is returned
    (K outputs, as every evaluation expects); `--variant legacy` returns the K+1-output model as SalUn's
    Classification/unlearn/boundary_ex.py does at every commit (9576623 "init" to a6e89fd), so a forget image
    predicted as the shadow class counts as an error (`keep_shadow` is its older name here).

Defaults: 10 epochs ([U]); lr 5e-6, the value of a third-party SalUn baseline script for both (the sibling
repo's maintainer says it is searched from 1e-8 up; [3P] used 1e-6..1e-4). Note: FGSM clips to [0, 1], so BS
assumes pixel-space inputs (not ZCA-whitened data).
"""

import torch
import torch.nn.functional as F

import training
from unlearn.common import FrozenTeacher, last_linear, register, run_epochs, sgd

BOUNDARY = {"unlearn_lr": 5e-6, "unlearn_epochs": 10, "bs_eps": 0.1}


def fgsm_nearest_labels(f0, x, y, eps):
    """(x_adv, argmax f0(x_adv)): one FGSM step of size eps in pixel space, rounded to the 8-bit grid."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(f0.model(x).float(), y)
        (g,) = torch.autograd.grad(loss, x)
    x_adv = (torch.clamp(x.detach() + eps * g.sign(), 0, 1) * 255).round() / 255
    return x_adv, f0(x_adv).argmax(1)


@register("BS", "boundary_shrink", defaults=BOUNDARY)
def boundary_shrink(model, ctx, cfg):
    f0 = FrozenTeacher(model)

    def loss(m, b):
        _, y_nbi = fgsm_nearest_labels(f0, b.x, b.y, cfg.bs_eps)
        return training.weighted_ce(m(b.x).float(), y_nbi, b.weight)

    return run_epochs(model, ctx, cfg, lambda e, opt: ctx.train_epoch(model, ctx.forget, opt, f"BS {e + 1}",
                                                                       loss_fn=loss))


def resize_head(model, rows):
    """Replace the last Linear by one with `rows` outputs, copying the first min(rows, old) rows (new rows keep
    nn.Linear's default init). Returns the name prefix of the head's parameters."""
    parent, attr, head = last_linear(model)
    new = torch.nn.Linear(head.in_features, rows, bias=head.bias is not None).to(head.weight.device,
                                                                                   head.weight.dtype)
    keep = min(rows, head.out_features)
    with torch.no_grad():
        new.weight[:keep] = head.weight[:keep]
        if head.bias is not None:
            new.bias[:keep] = head.bias[:keep]
    setattr(parent, attr, new)
    prefix = next(n for n, m in model.named_modules() if m is new)
    return prefix


@register("BE", "boundary_expanding", defaults={"unlearn_lr": 5e-6, "unlearn_epochs": 10},
          variants=("default", "legacy", "keep_shadow"))
def boundary_expand(model, ctx, cfg):
    k = ctx.num_classes
    torch.manual_seed(ctx.seed)  # the shadow row's init
    prefix = resize_head(model, k + 1)
    masks = None
    if ctx.masks:  # pruned head weights stay pruned; the shadow row is dense
        masks = dict(ctx.masks)
        for suffix in ("weight", "bias"):
            name = f"{prefix}.{suffix}"
            if name in masks:
                extra = torch.ones_like(masks[name][:1])
                masks[name] = torch.cat([masks[name], extra])
    optimizer = sgd(model, cfg)

    def loss(m, b):
        return training.weighted_ce(m(b.x).float(), torch.full_like(b.y, k), b.weight)

    def epoch(e, opt):
        bar = training.progress_bar(ctx.forget, f"BE {e + 1}", ctx.quiet)
        return training.train_epoch(model, ctx.forget, opt, loss_fn=loss, amp=ctx.amp, masks=masks, progress=bar,
                                    freeze_bn=ctx.freeze_bn)

    run_epochs(model, ctx, cfg, epoch, optimizer)
    if cfg.variant == "default":
        resize_head(model, k)
    return model

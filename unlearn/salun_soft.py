"""SalUn-soft ([U] unlearn/RL_pro.py, CLI `RL_proximal`): random labels without a hard mask; after every SGD
step a proximal soft-threshold pulls the update toward the epoch's anchor.

Per epoch e (0-based) with S steps, T = E * S steps in all and P parameters:
  anchor theta_0 <- theta (the anchor resets every epoch, as released)
  k = floor(mask_ratio * (T - (e * S + 1)) / T * P), tau = the k-th smallest |theta - theta_0|
  after each step: theta <- theta_0 + sign(d) * max(|d| - tau, 0), d = theta - theta_0
i.e. entries that moved at most tau return to the anchor and the others shrink toward it by tau; the
thresholded fraction decays linearly over the epochs.

The loop is the released CIFAR one (default): the forget set gets fixed random labels for the epoch (uniform over
all classes, the true one included), is joined to the retain set, and one shuffled pass is made over the union.
`--variant sequential` is the released SVHN loop (a random-label forget pass, then a retain pass), which is also
used when the two loaders do not share their source tensors (e.g. distilled retain data).

Defaults: `mask_ratio` is not defined in the released arg parser (SalUn-soft crashes as released) and no
setting is published (UNVERIFIED): SalUn's 0.5, lr 0.013 and 10 epochs are used.
"""
import math

import torch

import training
from unlearn.common import ce, register, run_epochs
from unlearn.rl import joinable, joint_loader, random_labels, relabelled_joint_loader
from utils import UsageError


def soft_threshold_(params, anchors, k):
    """In place: theta <- anchor + sign(d) * max(|d| - tau, 0), tau = k-th smallest |d| over all entries."""
    if k < 1:
        return
    with torch.no_grad():
        deltas = [p - a for p, a in zip(params, anchors)]
        flat = torch.cat([d.abs().flatten() for d in deltas])
        tau = torch.kthvalue(flat.float(), min(k, len(flat))).values
        for p, a, d in zip(params, anchors, deltas):
            p.copy_(a + d.sign() * (d.abs() - tau).clamp_min(0))


@register("SalUn_soft", "RL_proximal", "salun-soft", defaults={"unlearn_lr": 0.013, "unlearn_epochs": 10,
                                                               "mask_ratio": 0.5},
          variants=("default", "sequential"))
def salun_soft(model, ctx, cfg):
    if not 0 <= cfg.mask_ratio <= 1:
        raise UsageError(f"--mask_ratio: {cfg.mask_ratio} must be in [0, 1]")
    g = ctx.generator(offset=1)
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    joint = cfg.variant != "sequential" and joinable(ctx)
    steps = (len(joint_loader(ctx, ctx.retain.labels, cfg.batch_size, 0)) if joint
             else len(ctx.retain) + len(ctx.forget))
    total = cfg.unlearn_epochs * steps
    device = ctx.device

    def passes(e):
        """[(loader, relabel?)] for epoch e."""
        if joint:
            return [(relabelled_joint_loader(ctx, g, cfg.batch_size, e), False)]
        return [(ctx.forget, True), (ctx.retain, False)]

    def epoch(e, opt):
        anchors = [p.detach().clone() for p in params]
        k = math.floor(cfg.mask_ratio * (total - (e * steps + 1)) / total * n_params)
        training.set_train_mode(model, ctx.freeze_bn)
        loss_sum, n = torch.zeros((), device=device), 0
        for loader, relabel in passes(e):
            for b in training.progress_bar(loader, f"SalUn-soft {e + 1}", ctx.quiet):
                with training.autocast(device, ctx.amp):
                    labels = random_labels(b.y, ctx.num_classes, g) if relabel else None
                    loss = ce(model, b, labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                soft_threshold_(params, anchors, k)
                training.apply_masks(model, ctx.masks)
                loss_sum += loss.detach().float()
                n += 1
        return {"loss": loss_sum / max(n, 1)}

    return run_epochs(model, ctx, cfg, epoch)

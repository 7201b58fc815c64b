"""SCRUB (Kurmanji et al., NeurIPS'23): teacher-student min-max. The teacher is a frozen copy of the original
model, in eval mode at every call and outside the optimizer; the student (the model) starts from it.

Epoch e = 1..E (1-based, as SCRUB's notebooks):
    if e <= msteps: for each forget batch: minimise -KL_T(student || teacher)          (max step)
    for each retain batch:                  minimise ce_weight * CE + kl_weight * KL_T   (min step)
KL_T is RepDistiller's DistillKL: KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch. Both steps
share one SGD optimizer (shared momentum); the lr is multiplied by 0.1 after each epoch in lr_decay_epochs
(SCRUB's adjust_learning_rate: decays = #{d : e > d}). The student is in train mode in both steps.

Presets (`--unlearn scrub@NAME`):
  paper  SCRUB large_scale_unlearning.ipynb, CIFAR-10 ResNet (also the plain `SCRUB` default); no augmentation,
         as the notebook's loaders
  rum    RUM's port (unlearn/scrub.py, README): its 0-based `epoch <= msteps` ran the max step msteps+1 = 5
         times with msteps 4 and 5 epochs, i.e. every epoch: reproduced here as msteps 5. RUM's README leaves
         --gamma/--beta open; filled with SCRUB's usual 1 / 0.5 (UNVERIFIED). --no_aug, as RUM's pipelines.
  regun  ReGUn mul/scrub.py + conf/unlearn/scrub.yaml: max steps in the first floor(E/2) epochs, wd 0, crop+flip
"""
import torch.nn.functional as F

import training
from unlearn.common import REGUN_SETTING, RUM_SETTING, FrozenTeacher, rebatched, register, run_epochs, sgd
from utils import UsageError

PAPER = {"unlearn_lr": 5e-4, "unlearn_epochs": 3, "weight_decay": 5e-4, "kd_T": 4.0, "msteps": 2,
         "ce_weight": 0.99, "kl_weight": 0.001, "lr_decay_epochs": "3,5,9", "batch_size": 256,
         "forget_batch_size": 512, "no_aug": True}
PRESETS = {
    "paper": {},
    "rum": {**RUM_SETTING, "unlearn_lr": 5e-3, "unlearn_epochs": 5, "kd_T": 4.0, "msteps": 5, "ce_weight": 1.0,
            "kl_weight": 0.5, "lr_decay_epochs": "", "forget_batch_size": 256},
    "regun": {**REGUN_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 5, "kd_T": 4.0, "msteps": 2, "ce_weight": 1.0,
              "kl_weight": 0.5, "lr_decay_epochs": "3,5,9", "forget_batch_size": 128},
}


def distill_kl(student_logits, teacher_logits, T, weight=None):
    """KL(softmax(t/T) || softmax(s/T)) * T^2 per sample, (weighted) mean over the batch."""
    log_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1) * T * T
    return kl.mean() if weight is None else (weight * kl).mean()


def decay_factor(epoch, decay_epochs):
    """SCRUB's step decay for 1-based `epoch`: 0.1 ** #{d in decay_epochs : epoch > d}."""
    return 0.1 ** sum(epoch > d for d in decay_epochs)


def parse_epochs(text):
    try:
        return [int(v) for v in str(text or "").split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--lr_decay_epochs: expected comma-separated epochs like 3,5,9, got '{text}'")


@register("SCRUB", defaults=PAPER, presets=PRESETS)
def scrub(model, ctx, cfg):
    if cfg.msteps < 0 or cfg.kd_T <= 0:
        raise UsageError(f"--msteps/--kd_T: need msteps >= 0 and kd_T > 0, got {cfg.msteps}, {cfg.kd_T}")
    teacher = FrozenTeacher(model)
    decays = parse_epochs(cfg.lr_decay_epochs)
    forget = rebatched(ctx.forget, cfg.forget_batch_size, seed=ctx.seed + 2)
    T = cfg.kd_T
    optimizer = sgd(model, cfg)  # the student's parameters only
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    def max_loss(m, b):
        return -distill_kl(m(b.x), teacher(b.x), T, b.weight)

    def min_loss(m, b):
        logits = m(b.x)
        return (cfg.ce_weight * training.weighted_ce(logits.float(), b.y, b.weight)
                + cfg.kl_weight * distill_kl(logits, teacher(b.x), T, b.weight))

    def epoch(e, opt):
        e1 = e + 1
        for group, lr in zip(opt.param_groups, base_lrs):
            group["lr"] = lr * decay_factor(e1, decays)
        if e1 <= cfg.msteps:
            ctx.train_epoch(model, forget, opt, f"SCRUB max {e1}", loss_fn=max_loss)
        return ctx.train_epoch(model, ctx.retain, opt, f"SCRUB min {e1}", loss_fn=min_loss)

    model = run_epochs(model, ctx, cfg, epoch, optimizer)
    return model

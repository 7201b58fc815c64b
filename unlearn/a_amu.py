"""A-AMU (Khan 2025, "accelerated catastrophic forgetting"; peers.md 2.3): one epoch of Adam over the retain
set on

    L = CE(retain batch)^2  +  lambda * MMD^2( z(forget losses), z(unseen losses) )

The squared batch CE steepens plain fine-tuning. z maps each per-sample CE to a normal score of its soft rank
within its own batch: log(1 + CE), a soft empirical CDF F_i = mean_j sigmoid(k * d_ij), the probit of F, clamped
to [-kappa, kappa]. Per retain batch of size b, a forget batch of ratio * b is drawn without replacement from the
forget set (it carries the gradient), and an unseen batch with the forget batch's class histogram from the
held-out split (its z is a detached target). Both are un-augmented, so the two loss distributions differ only
by "trained on" vs "never seen": matching them aims at membership inference directly.

Variants (--variant):
  default  two-sided soft rank, d_ij = l_i - l_j: F in (0, 1), mean F = 1/2 exactly, z takes both signs
  legacy   the published one-sided rank, d_ij = relu(l_i - l_j): F >= 1/2, so z >= 0 and the smallest loss of a
           batch always maps to 0 (a half-normal-like score)

Unseen images come from the held-out split of the train set (`--split regun`), never from the test set (the
published code drew them from 70% of test, which then no longer measures TA honestly). Loss weights of distilled
samples scale the retain CE only; the rank transform treats samples alike. `--amu_reg W` adds W x the same term
to FT (unlearn/ft.py); for A_AMU, --amu_reg is lambda.

Published defaults (CIFAR-10/SVHN, ResNet-18/50): 1 epoch, Adam lr 2.4e-4 (no weight decay), lambda 34, k 2,
kappa 60, batch 64, forget/unseen batches 4 x 64. CINIC-10: lr 1e-4.
"""
import torch
import torch.nn.functional as F

from unlearn.common import ce, group_by_class, register, run_epochs
from unlearn.regun import select_class_informed
from utils import UsageError

DEFAULTS = {"unlearn_lr": 2.4e-4, "unlearn_epochs": 1, "batch_size": 64, "weight_decay": 0.0,
            "amu_reg": 34.0, "amu_k": 2.0, "amu_kappa": 60.0, "amu_ratio": 4}


def soft_probit(losses, k=2.0, kappa=60.0, two_sided=True):
    """Per-sample losses [n] -> normal scores of their soft ranks within the set [n], differentiable."""
    l = torch.log1p(losses.float() + 1e-8)
    d = l[:, None] - l[None, :]  # d_ij = l_i - l_j
    cdf = torch.sigmoid(k * (d if two_sided else d.clamp_min(0))).mean(1)  # j = i adds 1/(2n): 0 < F < 1
    return torch.special.ndtri(cdf).clamp(-kappa, kappa)


def mmd(a, b, sigma=1.0):
    """Biased MMD^2 between two 1-D samples under a Gaussian kernel; exactly 0 when a and b are equal."""
    def kernel_mean(x, y):
        return torch.exp(-(x[:, None] - y[None, :]) ** 2 / (2 * sigma ** 2)).mean()
    return kernel_mean(a, a) + kernel_mean(b, b) - 2 * kernel_mean(a, b)


def setting(cfg, key):
    """cfg's value, else A-AMU's published one (FT's add-on has only --amu_reg among its defaults)."""
    value = getattr(cfg, key, None)
    return DEFAULTS[key] if value is None else value


def gather(loader, rows):
    """Images at `rows` of a DeviceLoader's tensors, as its batches present them (no augmentation)."""
    return loader.images_at(rows)


class HeldoutRows:
    """The held-out loader's image rows grouped by class (count/start per class), for class-informed draws."""

    def __init__(self, loader, num_classes):
        order, self.count, self.start = group_by_class(loader.labels.index_select(0, loader.indices), num_classes)
        self.rows = loader.indices[order]

    def __len__(self):
        return len(self.rows)


class LossMatcher:
    """A-AMU's regulariser: matcher(model, b) draws a forget batch of ratio * b and an unseen batch with its
    class histogram (device tensors, no host sync) and returns --amu_reg x MMD^2 between their loss scores."""

    def __init__(self, ctx, cfg, who, two_sided=True):
        self.heldout, self.forget = ctx.require_heldout(who), ctx.forget
        self.pool = HeldoutRows(self.heldout, ctx.num_classes)
        self.weight, self.k, self.kappa, self.ratio = (setting(cfg, key) for key in
                                                       ("amu_reg", "amu_k", "amu_kappa", "amu_ratio"))
        if self.weight < 0 or self.k <= 0 or self.kappa <= 0 or self.ratio < 1:
            raise UsageError(f"--amu_reg/--amu_k/--amu_kappa/--amu_ratio: need weight >= 0, k > 0, kappa > 0, "
                             f"ratio >= 1, got {self.weight}, {self.k}, {self.kappa}, {self.ratio}")
        forget_classes = torch.unique(self.forget.labels.index_select(0, self.forget.indices))
        missing = forget_classes[self.pool.count[forget_classes] == 0].tolist()  # once, at set-up
        if missing:
            raise UsageError(f"--split: the held-out images hold no class {missing}; {who} compares forget losses "
                             "with unseen images of the same classes")
        self.two_sided = two_sided
        self.generator = ctx.generator(offset=11)

    def scores(self, model, x, y):
        return soft_probit(F.cross_entropy(model(x).float(), y, reduction="none"), self.k, self.kappa, self.two_sided)

    def __call__(self, model, b):
        f = self.forget.indices
        pick = torch.randperm(len(f), device=f.device, generator=self.generator)[:self.ratio * b]
        rows_f = f[pick]
        y_f = self.forget.labels.index_select(0, rows_f)
        rows_u = self.pool.rows[select_class_informed(self.pool, y_f, self.generator)]
        with torch.no_grad():
            z_u = self.scores(model, gather(self.heldout, rows_u), self.heldout.labels.index_select(0, rows_u))
        return self.weight * mmd(z_u, self.scores(model, gather(self.forget, rows_f), y_f))


@register("A_AMU", "AAMU", "accelerated_cf", defaults=DEFAULTS, variants=("default", "legacy"))
def a_amu(model, ctx, cfg):
    matcher = LossMatcher(ctx, cfg, "A_AMU", two_sided=cfg.variant != "legacy")

    def loss(m, batch):
        return ce(m, batch) ** 2 + matcher(m, len(batch.y))

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.unlearn_lr, weight_decay=cfg.weight_decay)
    return run_epochs(model, ctx, cfg,
                      lambda e, opt: ctx.train_epoch(model, ctx.retain, opt, f"A-AMU {e + 1}", loss_fn=loss),
                      optimizer)

"""ReGUn (Mirlach, Laguna, Vogt, ICLR'26 workshops): reference-guided unlearning. Instead of making forget
predictions wrong, distil them toward what the frozen original model does on *unseen* images of the same kind,
drawn from a held-out set D_h that no model trained on (`--split regun`).

Per forget batch B_f (one pass over the forget set per epoch, a retain batch alongside each):
    pick held-out images for B_f                      (--regun_selector)
    q = one target distribution for the whole batch   (--regun_aggregation, temperature --kd_T)
    loss = (1 - w_r) * KL(q || softmax(model(x_f) / T))  +  w_r * CE(retain batch)      (w_r = --retain_weight)
Selectors:
  class_informed (default; the paper's Algorithm 1) the forget batch's class histogram, drawn with replacement
                 from the held-out images of each class (the whole pool for a class D_h lacks)
  uniform        (the released config's default) a random held-out batch of the same size, classes ignored
  feature_1nn    per forget image, the held-out image with the most cosine-similar penultimate feature
Aggregations: mean_probs (default): the mean of softmax(logits / T) over the picked images; mean_logits: the
softmax of their mean logit. The reference's logits (and features) on D_h are computed once, so picking is free.

Class-wise forgetting (our addition; ReGUn evaluates random forgetting only): held-out images of a forgotten
class show the very concept being removed, and retrain has never learned it, so they leave the pool; the
class-informed selector then falls back to the whole remaining pool for those classes, as it does for any class
D_h lacks.

Defaults (ReGUn conf/unlearn/regun.yaml): 10 epochs, SGD lr 0.01, momentum 0.9, wd 0, batch 128, T 1, w_r 0.5.
"""
import torch
import torch.nn.functional as F

import training
from unlearn.common import FrozenTeacher, endless, group_by_class, plain_loader, register, run_epochs
from utils import UsageError

class HeldoutPool:
    """The reference's logits (and unit-norm features) on the held-out images, grouped by class for sampling."""

    def __init__(self, reference, loader, num_classes, exclude_classes=(), features=False):
        logits, feats, labels = [], [], []
        with torch.no_grad():
            for batch in plain_loader(loader):
                logits.append(reference(batch.x).float())
                if features:
                    feats.append(F.normalize(reference.model.embed(batch.x).float(), dim=1))
                labels.append(batch.y)
        labels = torch.cat(labels)
        keep = ~torch.isin(labels, torch.as_tensor(list(exclude_classes), dtype=torch.long, device=labels.device))
        if not keep.any():
            raise UsageError("--split: every held-out image belongs to a forgotten class; nothing to guide toward")
        order, self.count, self.start = group_by_class(labels[keep], num_classes)
        self.labels = labels[keep][order]
        self.logits = torch.cat(logits)[keep][order]
        self.features = torch.cat(feats)[keep][order] if features else None

    def __len__(self):
        return len(self.labels)


def select_class_informed(pool: HeldoutPool, labels, generator):
    """Pool positions with the class histogram of `labels`: one draw per forget sample from its own class,
    with replacement (from the whole pool when the class has no held-out image)."""
    u = torch.rand(len(labels), device=labels.device, generator=generator)
    size, start = pool.count[labels], pool.start[labels]
    own = start + (u * size).long().clamp_max(size - 1)
    anywhere = (u * len(pool)).long().clamp_max(len(pool) - 1)
    return torch.where(size > 0, own, anywhere)


def select_uniform(pool: HeldoutPool, n, generator, device):
    return torch.randperm(len(pool), device=device, generator=generator)[:n]


def select_feature_1nn(pool: HeldoutPool, reference, x):
    with torch.no_grad():
        f = F.normalize(reference.model.embed(x).float(), dim=1)
    return (f @ pool.features.T).argmax(1)


def target_distribution(logits, T, aggregation):
    """One distribution [K] for the batch from the picked held-out logits [m, K]."""
    if aggregation == "mean_logits":
        return F.softmax(logits.mean(0) / T, dim=0)
    return F.softmax(logits / T, dim=1).mean(0)


def kl_to_target(student_logits, q, T, weight=None):
    """KL(q || softmax(s/T)) per sample, (weighted) mean over the batch (PyTorch's `batchmean`)."""
    log_s = F.log_softmax(student_logits.float() / T, dim=1)
    kl = (q * (q.clamp_min(1e-12).log() - log_s)).sum(1)
    return kl.mean() if weight is None else (weight * kl).mean()


@register("ReGUn", "regun", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "weight_decay": 0.0,
                                      "batch_size": 128, "kd_T": 1.0, "retain_weight": 0.5,
                                      "regun_selector": "class_informed", "regun_aggregation": "mean_probs"})
def regun(model, ctx, cfg):
    heldout = ctx.require_heldout("ReGUn")
    if not 0 <= cfg.retain_weight <= 1 or cfg.kd_T <= 0:
        raise UsageError(f"--retain_weight/--kd_T: need 0 <= retain_weight <= 1 and kd_T > 0, got "
                         f"{cfg.retain_weight}, {cfg.kd_T}")
    reference = FrozenTeacher(model)  # ReGUn's fixed_reference: the original model, frozen
    pool = HeldoutPool(reference, heldout, ctx.num_classes, ctx.forget_classes or (),
                       features=cfg.regun_selector == "feature_1nn")
    generator = ctx.generator(offset=7)
    w_r, T = cfg.retain_weight, cfg.kd_T

    def pick(batch):
        if cfg.regun_selector == "class_informed":
            return select_class_informed(pool, batch.y, generator)
        if cfg.regun_selector == "uniform":
            return select_uniform(pool, len(batch.y), generator, batch.y.device)
        return select_feature_1nn(pool, reference, batch.x)

    def loss(m, pair):
        forget_batch, retain_batch = pair
        q = target_distribution(pool.logits[pick(forget_batch)], T, cfg.regun_aggregation)
        retain_ce = training.weighted_ce(m(retain_batch.x).float(), retain_batch.y, retain_batch.weight)
        return (1 - w_r) * kl_to_target(m(forget_batch.x), q, T, forget_batch.weight) + w_r * retain_ce

    retain_stream = endless(ctx.retain)

    def epoch(e, opt):
        return ctx.train_epoch(model, zip(ctx.forget, retain_stream), opt, f"ReGUn {e + 1}", loss_fn=loss)

    return run_epochs(model, ctx, cfg, epoch)

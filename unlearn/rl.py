"""RL (random labels): train the forget set towards random labels while the retain set keeps its own.

What an epoch is (`--rl_loop`):
  sequential (default)  SalUn's CIFAR-10/SVHN loop (Classification/unlearn/RL.py since f31f82e, 2024-04-04): one
                        pass over the forget set with labels drawn per batch, then one pass over the retain set
  joint                 SalUn's CIFAR-100/TinyImageNet loop (and its CIFAR-10 loop from 9576623 "init" until
                        f31f82e), and RUM's RL / RL_og (unlearn/RL.py, RL_original.py): one random label per forget
                        sample for the epoch, the forget set joined to the retain set, one shuffled pass over the
                        union
  paired                ReGUn's SalUn (mul/salun.py): one (forget, retain) batch pair per step, an epoch ends with
                        the shorter loader (Lightning's min_size); loss (1 - w_r) CE(forget, random labels) +
                        w_r CE(retain), w_r = --retain_weight
Random labels (`--rl_labels`): uniform over all K classes, the true one included (SalUn, RUM), or not_true: uniform
over the K - 1 others (ReGUn). SalUn reuses this loop with its gradient mask.

Presets: `RL@rum` = RUM's RL_og (README: lr 0.1, 10 epochs; batch 256, SGD momentum 0.9, wd 5e-4, --no_aug).
"""
import torch

from datasets import DeviceLoader
from unlearn.common import RUM_SETTING, ce, register, run_epochs
from utils import UsageError

DEFAULTS = {"unlearn_lr": 0.01, "unlearn_epochs": 10, "rl_loop": "sequential", "rl_labels": "uniform",
            "retain_weight": 0.5}


def random_labels(y, num_classes, generator, mode="uniform"):
    """One random label per entry of `y`: uniform over all classes, or (not_true) over all but y's own."""
    if mode == "not_true":
        return (y + torch.randint(1, num_classes, y.shape, device=y.device, generator=generator)) % num_classes
    return torch.randint(0, num_classes, y.shape, device=y.device, generator=generator)


def joinable(ctx):
    """Whether the retain and forget loaders can be served as one: device loaders over the same tensors (not,
    e.g., distilled retain data beside real forget data)."""
    r, f = ctx.retain, ctx.forget
    return (isinstance(r, DeviceLoader) and isinstance(f, DeviceLoader) and r.images is f.images
            and r.labels is f.labels and (r.weights is None) == (f.weights is None))


def joint_loader(ctx, labels, batch_size, seed):
    """One shuffled loader over retain + forget (joinable ones), served with the labels table `labels` and the
    retain loader's augmentation."""
    r, f = ctx.retain, ctx.forget
    weights = None if r.weights is None else torch.cat([r.weights, f.weights])
    return DeviceLoader(r.images, labels, torch.cat([r.indices, f.indices]), weights, batch_size, shuffle=True,
                        augment=r.augment, seed=seed, channels_last=r.channels_last)


def relabelled_joint_loader(ctx, generator, batch_size, epoch, mode="uniform"):
    """The joint loop's loader for one epoch: fresh random labels for the forget rows, true ones elsewhere."""
    labels = ctx.retain.labels.clone()
    rows = ctx.forget.indices
    labels[rows] = random_labels(labels[rows], ctx.num_classes, generator, mode)
    return joint_loader(ctx, labels, batch_size, ctx.seed * 1000 + epoch)


def random_label_epochs(model, ctx, cfg, after_backward=None, name="RL"):
    """epoch_fn(epoch, optimizer) of the chosen loop; SalUn passes its gradient mask as `after_backward`."""
    g = ctx.generator(offset=1)
    w = cfg.retain_weight

    def relabelled(m, b):
        return ce(m, b, random_labels(b.y, ctx.num_classes, g, cfg.rl_labels))

    def sequential(e, opt):
        ctx.train_epoch(model, ctx.forget, opt, f"{name} forget {e + 1}", loss_fn=relabelled,
                        after_backward=after_backward)
        return ctx.train_epoch(model, ctx.retain, opt, f"{name} retain {e + 1}", after_backward=after_backward)

    def joint(e, opt):
        union = relabelled_joint_loader(ctx, g, cfg.batch_size, e, cfg.rl_labels)
        return ctx.train_epoch(model, union, opt, f"{name} {e + 1}", after_backward=after_backward)

    def paired(e, opt):
        loss = lambda m, pair: (1 - w) * relabelled(m, pair[0]) + w * ce(m, pair[1])
        return ctx.train_epoch(model, zip(ctx.forget, ctx.retain), opt, f"{name} {e + 1}", loss_fn=loss,
                               after_backward=after_backward)

    if cfg.rl_loop == "joint" and not joinable(ctx):
        raise UsageError("--rl_loop: joint needs retain and forget loaders over the same images (real data); "
                         "use sequential or paired")
    return {"sequential": sequential, "joint": joint, "paired": paired}[cfg.rl_loop]


@register("RL", defaults=DEFAULTS,
          presets={"rum": {**RUM_SETTING, "unlearn_lr": 0.1, "unlearn_epochs": 10, "rl_loop": "joint"}})
def random_label_unlearning(model, ctx, cfg):
    return run_epochs(model, ctx, cfg, random_label_epochs(model, ctx, cfg))

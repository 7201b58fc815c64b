"""What every unlearning method shares: the registry, the context a method may use, the SGD it runs with,
and the epoch loop that times and records each epoch."""
import copy
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import training
from utils import Timer, UsageError

METHODS = {}   # canonical name -> method
ALIASES = {}   # lower-case name or alias -> canonical name


@dataclass
class Method:
    name: str
    run: Callable      # run(model, ctx, cfg) -> unlearned model; callers call apply(), which wraps it
    defaults: dict     # the published setting, used where the user gave no value
    needs_forget_loader: bool = True
    variants: tuple = ("default",)
    presets: dict = field(default_factory=dict)  # preset name -> defaults laid over `defaults` (method@preset)
    iterative: bool = True  # False: a one-shot edit (SSD, FF, IU) that uses no --unlearn_lr/--unlearn_epochs
    grows_masks: bool = False  # prunes during the run (FT_prune_bi): gradients are masked even if it starts dense

    def apply(self, model, ctx, cfg):
        """Run the method; what every caller calls. For the whole run, pruned coordinates (ctx.masks, looked up at
        each backward, so FT_prune_bi's growing masks count) get exactly zero gradient in `model` and in every
        model the method makes with ctx.make_model (retrain): the method sees the sparse sub-network, not a
        dense network whose pruned weights happen to be zero. The gradient hooks are removed afterwards."""
        if not ctx.masks and not self.grows_masks:
            return self.run(model, ctx, cfg)  # dense: nothing to mask, and a hook per parameter costs each backward
        make_model = ctx.make_model
        with ExitStack() as hooks:
            def hooked(m):
                hooks.enter_context(training.masked_gradients(m, lambda: ctx.masks))
                return m

            if make_model is not None:
                ctx.make_model = lambda: hooked(make_model())
            try:
                return self.run(hooked(model), ctx, cfg)
            finally:
                ctx.make_model = make_model


def register(name, *aliases, defaults=None, variants=("default",), presets=None, iterative=True, grows_masks=False):
    """Register `run` under `name` (and aliases, case-insensitive). `presets` name whole published settings:
    `--unlearn name@preset` uses `{**defaults, **presets[preset]}` (the user's flags still win)."""
    def wrap(run):
        METHODS[name] = Method(name, run, dict(defaults or {}), variants=variants,
                               presets={k: dict(v) for k, v in (presets or {}).items()}, iterative=iterative,
                               grows_masks=grows_masks)
        for key in (name, *aliases):
            ALIASES[key.lower()] = name
        return run
    return wrap


def split_preset(name: str):
    """'scrub@rum' -> ('scrub', 'rum'); 'FT' -> ('FT', None)."""
    base, sep, preset = str(name).partition("@")
    return base, (preset if sep else None)


def get_method(name: str) -> Method:
    base, _ = split_preset(name)
    key = ALIASES.get(base.lower())
    if key is None:
        raise UsageError(f"--unlearn: unknown method '{name}' (choose from {', '.join(METHODS)})")
    return METHODS[key]


def resolve(name: str):
    """(method, preset name or None, defaults): the method's defaults with the preset's laid over them."""
    method = get_method(name)
    _, preset = split_preset(name)
    if preset is None:
        return method, None, dict(method.defaults)
    match = {k.lower(): k for k in method.presets}.get(preset.lower())
    if match is None:
        known = ", ".join(f"{method.name}@{k}" for k in method.presets) or "none"
        raise UsageError(f"--unlearn: {method.name} has no preset '{preset}' (presets: {known})")
    return method, match, {**method.defaults, **method.presets[match]}


@dataclass
class Context:
    """Everything a method may touch besides its hyperparameters. Loaders yield Batch(x, y, weight, index)
    and may come from real or distilled data (weights then scale each sample's loss)."""
    retain: object                   # shuffled, augmented loader over the retain data
    forget: object                   # shuffled, augmented loader over the forget data
    num_classes: int
    device: torch.device
    make_model: Callable             # a freshly initialised model of the same architecture (retrain)
    amp: bool = False
    masks: Optional[dict] = None     # pruning masks: pruned weights stay exactly zero in every method
    freeze_bn: bool = False          # keep BatchNorm statistics fixed during updates
    save_dir: Optional[str] = None
    seed: int = 0
    quiet: bool = True
    forget_classes: Optional[list] = None  # the forgotten classes when the forget set is whole classes, else None
    heldout: object = None           # shuffled, un-augmented loader over held-out images never trained on, or None
    history: list = field(default_factory=list)

    def require_heldout(self, method: str):
        """The held-out loader, or a usage error when the split has none (ReGUn, A_AMU)."""
        if self.heldout is None or len(self.heldout.indices) == 0:
            raise UsageError(f"--split: {method} needs held-out images the model never trained on; train the "
                             "original with --split regun (a held-out 10% taken first) and unlearn that model")
        return self.heldout

    def generator(self, offset=0):
        """A fresh seeded generator on the device (random labels, ...)."""
        return torch.Generator(device=self.device).manual_seed(self.seed * 1000 + offset)

    def train_epoch(self, model, loader, optimizer, desc="", **kw):
        bar = training.progress_bar(loader, desc, self.quiet)
        return training.train_epoch(model, loader, optimizer, amp=self.amp, masks=self.masks, progress=bar,
                                    freeze_bn=self.freeze_bn, **kw)


def sgd(model, cfg, weight_decay=None):
    """The seeds' optimizer for every iterative method: SGD, momentum 0.9, wd 5e-4, constant lr."""
    wd = cfg.weight_decay if weight_decay is None else weight_decay
    return training.build_optimizer(model.parameters(), cfg.unlearn_lr, cfg.momentum, wd)


def run_epochs(model, ctx: Context, cfg, epoch_fn, optimizer=None, scheduler=None):
    """cfg.unlearn_epochs times: stats = epoch_fn(epoch, optimizer); records loss and seconds per epoch."""
    optimizer = optimizer or sgd(model, cfg)
    for epoch in range(cfg.unlearn_epochs):
        with Timer(ctx.device) as t:
            stats = epoch_fn(epoch, optimizer)
        if scheduler is not None:
            scheduler.step()
        ctx.history.append({"epoch": epoch + 1, "loss": float(stats["loss"]), "epoch_s": t.seconds})
        if not ctx.quiet:
            print(f"  unlearn epoch {epoch + 1}/{cfg.unlearn_epochs}  loss {float(stats['loss']):.4f}  "
                  f"{t.seconds:.2f}s", flush=True)
    return model


def ce(model, batch, labels=None):
    """Weighted cross-entropy of a batch (against `labels` if given)."""
    return training.weighted_ce(model(batch.x).float(), batch.y if labels is None else labels, batch.weight)


def plain_loader(loader, batch_size=None):
    """The same samples in a fixed order without augmentation (importance and Fisher estimates, FGSM
    targets); `loader` itself when it is not a DeviceLoader."""
    from datasets import DeviceLoader
    if not isinstance(loader, DeviceLoader):
        return loader
    return DeviceLoader(loader.images, loader.labels, loader.indices, loader.weights,
                        batch_size or loader.batch_size, shuffle=False, augment=None,
                        channels_last=loader.channels_last)


def rebatched(loader, batch_size, seed=0):
    """The same shuffled, augmented stream at another batch size (SCRUB's forget batch, ...)."""
    from datasets import DeviceLoader
    if not isinstance(loader, DeviceLoader) or batch_size in (None, loader.batch_size):
        return loader
    return DeviceLoader(loader.images, loader.labels, loader.indices, loader.weights, batch_size,
                        shuffle=loader.shuffle, augment=loader.augment, seed=seed, drop_last=loader.drop_last,
                        channels_last=loader.channels_last)


def endless(loader):
    """Batches forever, re-iterating the loader (fresh shuffle and augmentation each pass, unlike
    itertools.cycle, which replays the first pass's batches)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return


def group_by_class(labels, num_classes):
    """(order, count, start): the positions that sort `labels` by class (stable), and per class its count and
    its first position in that order; class-informed draws (ReGUn, A_AMU) sample within these runs."""
    order = torch.argsort(labels, stable=True)
    count = torch.bincount(labels, minlength=num_classes)
    return order, count, torch.cumsum(count, 0) - count


def last_linear(model):
    """(parent module, attribute name, module) of the model's last nn.Linear: the classifier head."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            found = name
    if found is None:
        raise UsageError("this method needs a model whose output layer is an nn.Linear")
    parent_name, _, attr = found.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr, getattr(parent, attr)


def eval_grads(model, loss):
    """Gradients of `loss` w.r.t. the parameters that require them (None replaced by zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


class FrozenTeacher:
    """A frozen copy of a model: no gradients, eval mode asserted at every call, never in an optimizer."""

    def __init__(self, model):
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def __call__(self, x):
        if self.model.training:
            self.model.eval()
        return self.model(x)


# The optimiser and data setting every baseline of a protocol shares, laid under each method's @rum / @regun preset.
# RUM: README's commented block and arg_parser (batch 256, SGD momentum 0.9, wd 5e-4); its pipelines pass --no_aug.
RUM_SETTING = {"batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4, "no_aug": True}
# ReGUn: conf/data/*.yaml batch 128 with crop+flip; conf/unlearn/*.yaml SGD momentum 0.9, wd 0, no scheduler.
REGUN_SETTING = {"batch_size": 128, "momentum": 0.9, "weight_decay": 0.0, "no_aug": False}


def retain_subset(ctx):
    """The retain loader restricted to a fixed random subset as large as the forget set (ReGUn's
    retain_dataloader_subset for Finetune and l1-sparse), drawn once per run from the run's seed and served like
    the retain loader (reshuffled each pass, same augmentation and batch size). ReGUn draws it with Python's
    random.shuffle on the sorted retain indices; ours is a seeded torch.randperm, so the same size, not the same
    images."""
    from datasets import DeviceLoader
    r, f = ctx.retain, ctx.forget
    if not (isinstance(r, DeviceLoader) and isinstance(f, DeviceLoader)):
        raise UsageError("--retain_subset: needs device-resident retain and forget loaders")
    n = min(len(f.indices), len(r.indices))
    keep = torch.randperm(len(r.indices), device=r.indices.device, generator=ctx.generator(offset=13))[:n]
    keep = torch.sort(keep).values
    return DeviceLoader(r.images, r.labels, r.indices[keep], None if r.weights is None else r.weights[keep],
                        r.batch_size, shuffle=True, augment=r.augment, seed=ctx.seed * 1000 + 13,
                        drop_last=r.drop_last, channels_last=r.channels_last)

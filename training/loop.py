"""The one training loop and evaluation, shared by training, expert buffers and unlearning.

train_epoch runs one pass over a DeviceLoader with an optional per-sample loss weight, an optional custom
loss, optional pruning masks, and bf16 autocast; it returns device tensors so nothing syncs per step.
"""
import contextlib
import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils import UsageError


def autocast(device, amp: bool):
    """bf16 autocast on CUDA when amp is on; a no-op elsewhere (bf16 on CPU is slow, not faster)."""
    device = torch.device(device)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_amp(flag: str, device) -> bool:
    if flag not in ("auto", "bf16", "off"):
        raise UsageError(f"--amp: '{flag}' is not one of auto, bf16, off")
    return torch.device(device).type == "cuda" and flag in ("auto", "bf16")


def weighted_ce(logits, y, weight=None):
    """Cross-entropy averaged over the batch; with per-sample weights, mean(w_i * CE_i)."""
    if weight is None:
        return F.cross_entropy(logits, y)
    return (weight * F.cross_entropy(logits, y, reduction="none")).mean()


def build_optimizer(params, lr, momentum=0.9, weight_decay=5e-4):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def parse_milestones(text: str):
    try:
        milestones = [int(m) for m in str(text).split(",") if m.strip()]
    except ValueError:
        raise UsageError(f"--decreasing_lr: expected comma-separated epochs like 91,136, got '{text}'")
    if any(m < 1 for m in milestones):
        raise UsageError(f"--decreasing_lr: milestones {milestones} must be positive epochs")
    return milestones  # a milestone at or past the last epoch simply never fires (short runs keep defaults)


def build_scheduler(optimizer, kind: str, epochs: int, milestones=(), warmup: int = 0, gamma: float = 0.1):
    """Per-epoch LR factor: linear warm-up for `warmup` epochs, then step decay at `milestones` (multistep)
    or cosine to 0 over the remaining epochs. Stepped once per epoch."""
    if kind not in ("multistep", "cosine", "constant"):
        raise UsageError(f"--scheduler: '{kind}' is not one of multistep, cosine, constant")

    def factor(epoch):
        if epoch < warmup:
            return (epoch + 1) / warmup
        if kind == "multistep":
            return gamma ** sum(epoch >= m for m in milestones)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def apply_masks(model, masks):
    """Zero pruned weights (masks: parameter name -> bool tensor, moved to the weight's device if need be). Called
    after every optimizer step, so momentum and weight decay can never revive a pruned weight, and whenever a
    mask is made or loaded (training.pruning)."""
    if masks:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name].device))


def masked(masks, name, t):
    """`t` times the pruning mask of parameter `name`, or `t` itself where that parameter has none. The one
    masking rule, applied to gradients (masked_gradients) and to the parameters of a functional call (FF's
    class_fisher), where multiplying the weights masks their gradient the same way."""
    mask = masks.get(name) if masks else None
    return t if mask is None else t * mask


@contextlib.contextmanager
def masked_gradients(model, current_masks):
    """Within the block every gradient w.r.t. a parameter of `model` is multiplied by its pruning mask, in
    .backward() and torch.autograd.grad alike (double backward included): pruned coordinates get exactly zero
    gradient, as under Unlearn-Sparse's re-parametrisation weight = weight_orig * mask. apply_masks alone keeps
    the weights at zero but not their gradients, which feed momentum, Fisher and influence estimates.
    `current_masks()` gives the masks (name -> bool tensor, or None) at each backward, so masks that grow
    during a run (FT_prune_bi), even on a model that started dense, are honoured."""
    handles = [p.register_hook(lambda g, name=name: masked(current_masks(), name, g))
               for name, p in model.named_parameters() if p.requires_grad]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def set_train_mode(model, freeze_bn=False):
    """model.train(), optionally keeping BatchNorm running statistics fixed (tiny distilled batches would
    drag them toward the statistics of a few synthetic images)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def train_epoch(model, loader, optimizer, loss_fn=None, amp=False, masks=None, progress=None,
                after_backward=None, freeze_bn=False, on_batch=None):
    """One pass over `loader` (any iterable of batches when loss_fn is given).

    loss_fn(model, batch) -> scalar overrides the default weighted CE; after_backward(model) may edit the
    gradients (saliency masks); masks (pruning) are re-applied after every step; on_batch(batch, logits)
    sees the training-mode logits of each batch before its step (default loss only; e.g. learning-event
    proxies, which must not sync). Returns {"loss", "acc"} as device tensors: per-sample means for the
    default loss, per-step mean loss (acc NaN) for a custom one."""
    set_train_mode(model, freeze_bn)
    device = next(model.parameters()).device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for batch in (progress or loader):
        with autocast(device, amp):
            if loss_fn is None:
                logits = model(batch.x)
                loss = weighted_ce(logits.float(), batch.y, batch.weight)
                correct += (logits.argmax(1) == batch.y).sum()
                if on_batch is not None:
                    on_batch(batch, logits.detach())
            else:
                loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(model)
        optimizer.step()
        apply_masks(model, masks)
        n = len(batch.y) if loss_fn is None else 1
        total_loss += loss.detach().float() * n
        seen += n
    seen = max(seen, 1)
    acc = 100.0 * correct / seen if loss_fn is None else torch.full((), float("nan"), device=device)
    return {"loss": total_loss / seen, "acc": acc}


@torch.no_grad()
def predict(model, loader):
    """Logits and labels of every sample, in loader order; eval mode, fp32 whatever --amp says (the references
    measure in fp32; --amp governs updates only)."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for batch in loader:
        logits.append(model(batch.x).float())
        labels.append(batch.y)
    if not logits:
        return torch.zeros(0, 0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def embed(model, loader):
    """Penultimate features (model.embed) of every sample, float32 [N, D] on the device, in loader order;
    eval mode, fp32. What herding, k-center, entanglement scores and feature caches are computed from."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for batch in loader:
        chunks.append(model.embed(batch.x).float())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0, device=device)


def evaluate(model, loader) -> dict:
    """Accuracy (percent) and mean CE of a model on a loader (fp32); one host sync."""
    logits, labels = predict(model, loader)
    if len(labels) == 0:
        return {"acc": float("nan"), "loss": float("nan")}
    acc = 100.0 * (logits.argmax(1) == labels).float().mean()
    loss = F.cross_entropy(logits, labels)
    return {"acc": acc.item(), "loss": loss.item()}


def progress_bar(iterable, desc: str, quiet: bool = False):
    """tqdm over a loop, off when quiet or when stderr is not a terminal."""
    import sys
    return tqdm(iterable, desc=desc, leave=False, disable=quiet or not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------------------------
# Shared by the training entry scripts (main_train.py, main_prune.py, main_backdoor.py): the recipe flags,
# the recipe stored in model.pt, and the resumable per-epoch train/validate loop.

RECIPE_KEYS = ("epochs", "lr", "batch_size", "momentum", "weight_decay", "scheduler", "decreasing_lr", "warmup",
               "no_aug")
# Flags that must match for last.pt to be continued (the rest, e.g. --quiet, may change between runs).
RESUME_KEYS = ("dataset", "arch", *RECIPE_KEYS, "train_on", "seed", "split_seed", "split", "norm_mean", "norm_std")
RESUME_DEFAULTS = {"split": "val10"}  # keys added later: what a last.pt written before them was made with


def add_recipe_args(p, epochs: int = 182) -> None:
    """The training recipe (Unlearn-Sparse's defaults) and the speed/resume flags."""
    from utils import add_bool
    g = p.add_argument_group("training recipe")
    g.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--batch_size", type=int, default=256, help="minibatch size")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight_decay", type=float, default=5e-4, help="SGD weight decay")
    g.add_argument("--decreasing_lr", default="91,136", help="multistep milestones (epochs), lr x0.1 at each")
    g.add_argument("--scheduler", default="multistep", help="multistep, cosine or constant")
    g.add_argument("--warmup", type=int, default=0, help="linear warm-up epochs")
    g.add_argument("--no_aug", action="store_true", help="train without crop+flip augmentation")
    g.add_argument("--train_on", default="train", help="train (the 90%% split) or full (all train images)")
    g = p.add_argument_group("speed and resuming")
    g.add_argument("--amp", default="auto", help="bf16 autocast: auto (on for CUDA), bf16 or off")
    add_bool(g, "--channels_last", None, "channels_last memory format (default: on for CUDA)")
    add_bool(g, "--compile", False, "torch.compile the model")
    add_bool(g, "--resume", False, "continue from last.pt in --save_dir (a rerun also continues)")
    g.add_argument("--stop_after", type=int, default=None,
                   help="stop after this many epochs in this invocation (fits a job's time limit; rerun to go on)")


def check_recipe_args(args) -> list:
    """Validate the recipe flags; returns the scheduler milestones."""
    if args.epochs < 1:
        raise UsageError(f"--epochs: must be at least 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size: must be at least 1, got {args.batch_size}")
    if args.train_on not in ("train", "full"):
        raise UsageError(f"--train_on: '{args.train_on}' is not one of train, full")
    return parse_milestones(args.decreasing_lr) if args.scheduler == "multistep" else []


def recipe(args) -> dict:
    """How the model was trained, stored in model.pt so `retrain` can repeat it on the retain set."""
    return {k: getattr(args, k) for k in RECIPE_KEYS}


def plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="val")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.plot(epochs, [h["train_acc"] for h in history], label="train")
    b.plot(epochs, [h["val_acc"] for h in history], label="val")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fit(model, optimizer, scheduler, train_loader, val_loader, epochs, last_path, config, *, amp=False,
        masks=None, step_model=None, quiet=False, stop_after=None, resume_keys=RESUME_KEYS, on_epoch_start=None,
        on_batch=None, label=""):
    """Train to `epochs` epochs, validating and writing last.pt (model, optimizer, scheduler, loader RNG,
    history) after every epoch; continues from `last_path` when it exists (its config must agree with
    `config` on `resume_keys`). `masks` (pruning) stay applied; `on_epoch_start(epoch)` runs before each
    epoch (e.g. saving rewind weights); `on_batch` goes to train_epoch. Stops early after `stop_after`
    epochs of this call.

    Returns (history, train_seconds, epochs_run, done)."""
    import os

    from utils import Timer, load_checkpoint, save_checkpoint
    device = next(model.parameters()).device
    step_model = step_model or model
    start_epoch, history, train_seconds = 0, [], 0.0
    if os.path.isfile(last_path):
        state = load_checkpoint(last_path, map_location=device)
        saved = {**RESUME_DEFAULTS, **state["config"]}
        changed = [k for k in resume_keys if saved.get(k) != config.get(k)]
        if changed:
            raise UsageError(f"--save_dir: last.pt there was made with other {', '.join('--' + k for k in changed)}"
                             "; use another --save_dir or the same flags")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        train_loader.generator.set_state(state["loader_rng"].cpu())  # generator states are CPU bytes
        start_epoch, history, train_seconds = state["epoch"], state["history"], state["train_seconds"]
        print(f"resuming {os.path.dirname(last_path)} at epoch {start_epoch}/{epochs}")

    epochs_run = 0
    for epoch in range(start_epoch, epochs):
        if stop_after is not None and epochs_run >= stop_after:
            print(f"stopping after {epochs_run} epochs (--stop_after); rerun to continue")
            return history, train_seconds, epochs_run, False
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        bar = progress_bar(train_loader, f"{label}epoch {epoch + 1}/{epochs}", quiet)
        with Timer(device) as t:
            stats = train_epoch(step_model, train_loader, optimizer, amp=amp, masks=masks, progress=bar,
                                on_batch=on_batch)
            scheduler.step()
        val = evaluate(model, val_loader)
        train_seconds += t.seconds
        history.append({"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                        "train_loss": stats["loss"].item(), "train_acc": stats["acc"].item(),
                        "val_loss": val["loss"], "val_acc": val["acc"], "epoch_s": t.seconds})
        h = history[-1]
        print(f"{label}epoch {epoch + 1:4d}/{epochs}  loss {h['train_loss']:.4f}  train {h['train_acc']:6.2f}%  "
              f"val {h['val_acc']:6.2f}%  {t.seconds:6.2f}s", flush=True)
        save_checkpoint({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "loader_rng": train_loader.generator.get_state(),
                         "epoch": epoch + 1, "history": history, "train_seconds": train_seconds,
                         "config": config}, last_path)
        epochs_run += 1
    return history, train_seconds, epochs_run, True

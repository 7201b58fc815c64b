"""Memorisation scores and their cheap proxies (RUM), one float per *official* train image (NaN = none),
oriented "higher = more memorised" so high / mid / low mean the same whatever the source:
- scores: Feldman-Zhang files, `.npz` with `memorization` (RUM's CIFAR-10 estimate; estimate_mem.py writes
  the same, by subsample_memorization below) or `tr_mem` (Feldman-Zhang's CIFAR-100 release);
- learning-event proxies, recorded by `main_train.py --record_events` (EventRecorder) into events.npz;
- held-out retraining and loss curvature, computed on a trained model into proxies.npz:

    python -m forget_sets.memorization --mask runs/orig/model.pt --compute ho_ret,curvature  # -> proxies.npz
    python -m forget_sets.memorization --mem_scores mem.npz --proxy_file runs/orig/events.npz  # Spearman table
"""
import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import models
import training
from datasets import load_data
from utils import (UsageError, add_common_args, get_device, load_checkpoint, make_parser, run_cli, save_checkpoint,
                   save_npz, seed_everything)

# What each proxy file stores (already oriented: higher = more memorised).
PROXIES = {
    "confidence": "1 - running mean of the true-class softmax probability (RUM's C-proxy)",
    "max_conf": "1 - running mean of the largest softmax probability",
    "entropy": "running mean of the softmax entropy (the proxy paper's negative entropy, negated)",
    "bi_acc": "1 - running mean of 0/1 correctness",
    "ho_ret": "symmetric KL between the model's softmax and that of a copy fine-tuned on the test set",
    "curvature": "finite-difference input curvature of the loss, on the trained model",
}
SCORE_KEYS = ("memorization", "tr_mem")
ORIENTED = "higher = more memorised; NaN = not recorded"


# ---------------------------------------------------------------------------------------------------------
# Score and proxy files

def _load_vector(path, keys, n, flag, what):
    """(key, float64 [n]) of the first of `keys` in the .npz at `path`; any problem is one UsageError line."""
    if not os.path.isfile(path):
        raise UsageError(f"{flag}: file '{path}' does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception:
        z = None
    if not hasattr(z, "files"):
        raise UsageError(f"{flag}: '{path}' is not an .npz file")
    with z:
        key = next((k for k in keys if k in z.files), None)
        values = None if key is None else z[key]
        if values is None or values.shape != (n,):
            found = f"it has {key} of shape {values.shape}" if key else f"it has {', '.join(z.files) or 'nothing'}"
            raise UsageError(f"{flag}: '{path}' must hold {what} of length {n} (one per official train image); "
                             f"{found}")
    return key, values.astype(np.float64)


def load_mem_scores(path: str, n: int, flag: str = "--mem_scores") -> np.ndarray:
    """Feldman-Zhang memorisation scores over the official train index (float64 [n], NaN = no score)."""
    return _load_vector(path, SCORE_KEYS, n, flag, "'memorization' or 'tr_mem'")[1]


def load_proxy(path: str, name: str, n: int, flag: str = "--proxy_file") -> np.ndarray:
    if name not in PROXIES:
        raise UsageError(f"--proxy: '{name}' is not one of {', '.join(PROXIES)}")
    return _load_vector(path, (name,), n, flag, f"proxy '{name}'")[1]


def save_proxies(path: str, proxies: dict, **meta) -> None:
    """Add proxies (name -> [N] array) to the .npz at `path`, keeping the others already there."""
    old = {}
    if os.path.isfile(path):
        with np.load(path, allow_pickle=False) as z:
            old = {k: z[k] for k in z.files}
    new = {k: np.asarray(v, dtype=np.float32) for k, v in proxies.items()}
    save_npz(path, **{**old, **new, **meta, "oriented": np.array(ORIENTED)})


# ---------------------------------------------------------------------------------------------------------
# Memorisation by subsampling (Feldman & Zhang; the loop behind estimate_mem.py)

def subset_draw(pool, ratio: float, seed: int, k: int) -> np.ndarray:
    """Model k's training subset: a seeded random `ratio` of the pool, the same on every rerun."""
    rng = np.random.default_rng([seed, k])
    return np.sort(rng.choice(np.asarray(pool), int(round(ratio * len(pool))), replace=False))


def subsample_memorization(train_and_predict, n, pool, num_models, ratio=0.7, seed=0, store=None) -> dict:
    """mem(i) = mean correctness on image i of the models trained with it - of the models trained without it.

    Model k trains on subset_draw(pool, ratio, seed, k): train_and_predict(k, subset) returns its
    correctness on every official train image (bool [n]), or None to stop here. With `store`, each model's
    result is saved atomically as <store>/model_<k>.npz and reused, so a rerun goes on where it stopped.
    mem is NaN outside the pool and where either count is 0 (RUM divides by max(count, 1e-10) instead).
    Returns {memorization, mean_in, mean_out, n_in, n_out, models}."""
    n_in, n_out, hit_in, hit_out = (np.zeros(n) for _ in range(4))
    models_done = 0
    for k in range(num_models):
        path = os.path.join(store, f"model_{k:05d}.npz") if store else None
        if path and os.path.isfile(path):
            with np.load(path) as z:
                inside, correct = z["in_mask"], z["correct"]
        else:
            inside = np.zeros(n, bool)
            inside[subset_draw(pool, ratio, seed, k)] = True
            correct = train_and_predict(k, np.flatnonzero(inside))
            if correct is None:
                break
            correct = np.asarray(correct, bool)
            if path:
                save_npz(path, in_mask=inside, correct=correct)
        n_in += inside
        n_out += ~inside
        hit_in += correct & inside
        hit_out += correct & ~inside
        models_done += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in, mean_out = hit_in / n_in, hit_out / n_out  # 0/0 = NaN
    mem = mean_in - mean_out
    mem[~np.isin(np.arange(n), pool)] = np.nan
    return {"memorization": mem, "mean_in": mean_in, "mean_out": mean_out, "n_in": n_in, "n_out": n_out,
            "models": models_done}


class SubsetModels:
    """subsample_memorization's train_and_predict for estimate_mem.py: model k trains from scratch on its subset
    with the recipe flags (resumable through save_dir/last.pt), then gives its correctness on every train
    image. Counts the models trained in this invocation and their seconds; --stop_after counts epochs."""

    def __init__(self, args, info, data, mean, std, milestones, device, resume_keys):
        self.args, self.info, self.data, self.mean, self.std = args, info, data, mean, std
        self.milestones, self.device, self.resume_keys = milestones, device, resume_keys
        self.amp = training.resolve_amp(args.amp, device)
        self.channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
        self.val_loader = data.loader("val", batch_size=1024, channels_last=self.channels_last)
        self.all_loader = data.loader(np.arange(len(data.y_train)), batch_size=1024, channels_last=self.channels_last)
        self.last_path = os.path.join(args.save_dir, "last.pt")
        self.epochs_left, self.new, self.seconds = args.stop_after, 0, 0.0

    def __call__(self, k, subset):
        args, info = self.args, self.info
        started = time.perf_counter()
        seed_everything(args.seed * 100_003 + k)
        model = models.get_model(args.arch, info.num_classes, info.channels, info.im_size, self.mean,
                                 self.std).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = training.build_optimizer(model.parameters(), args.lr, args.momentum, args.weight_decay)
        scheduler = training.build_scheduler(optimizer, args.scheduler, args.epochs, self.milestones, args.warmup)
        loader = self.data.loader(subset, train=True, batch_size=args.batch_size, seed=args.seed * 100_003 + k,
                                  channels_last=self.channels_last, **({"augment": None} if args.no_aug else {}))
        _, _, ran, done = training.fit(
            model, optimizer, scheduler, loader, self.val_loader, args.epochs, self.last_path,
            {**vars(args), "model": k}, amp=self.amp, step_model=torch.compile(model) if args.compile else model,
            quiet=args.quiet, stop_after=self.epochs_left, resume_keys=(*self.resume_keys, "model"),
            label=f"model {k}: ")
        if self.epochs_left is not None:
            self.epochs_left -= ran
        if not done:
            return None
        logits, labels = training.predict(model, self.all_loader)
        correct = (logits.argmax(1) == labels).cpu().numpy()
        os.remove(self.last_path)  # the next model starts fresh
        self.new += 1
        self.seconds += time.perf_counter() - started
        return correct


# ---------------------------------------------------------------------------------------------------------
# Learning-event proxies, recorded while the original model trains

class EventRecorder:
    """Per-example running means of four learning events of the training-mode forward pass on the augmented
    batch, taken before the step: true-class confidence, max confidence, negative entropy, correctness.

    Pass it as training.fit's `on_batch` (and its `on_epoch_start` method as fit's): sums and counts stay on
    the device, indexed by batch.index (official indices), so a step costs no host sync. `partial` is the
    file that carries the sums across a resumed run; finish() writes events.npz."""

    def __init__(self, n: int, device, partial: str = None):
        self.sums = torch.zeros(n, 4, device=device)
        self.counts = torch.zeros(n, device=device)
        self.epoch, self.partial = 0, partial  # epochs the sums cover
        if partial and os.path.isfile(partial):
            state = load_checkpoint(partial, map_location=device)
            self.sums, self.counts, self.epoch = state["sums"], state["counts"], state["epoch"]

    def __call__(self, batch, logits):
        logp = logits.float().log_softmax(1)
        p = logp.exp()
        events = torch.stack([p.gather(1, batch.y[:, None]).squeeze(1), p.amax(1), (p * logp).sum(1),
                              (logp.argmax(1) == batch.y).float()], 1)
        self.sums.index_add_(0, batch.index, events)
        self.counts.index_add_(0, batch.index, torch.ones_like(events[:, 0]))

    def on_epoch_start(self, epoch: int) -> None:
        # A resumed run continues from last.pt's epoch; the sums must cover exactly the epochs before it.
        if epoch != self.epoch:
            raise UsageError(f"--record_events: the recorded events cover {self.epoch} epochs but training "
                             f"resumes at epoch {epoch} (started without the flag?); use a fresh --save_dir")
        self.checkpoint()
        self.epoch = epoch + 1

    def checkpoint(self) -> None:
        """Save the sums so far (at each epoch start, and when a run stops early) for a resumed run."""
        if self.partial:
            save_checkpoint({"sums": self.sums, "counts": self.counts, "epoch": self.epoch}, self.partial)

    def proxies(self) -> dict:
        mean = (self.sums / self.counts[:, None]).cpu().numpy()  # 0/0 = NaN: never trained on
        return {"confidence": 1 - mean[:, 0], "max_conf": 1 - mean[:, 1], "entropy": -mean[:, 2],
                "bi_acc": 1 - mean[:, 3]}

    def finish(self, epochs: int, path: str) -> None:
        """Write events.npz once the sums cover all `epochs` (a rerun of a finished run keeps the file)."""
        if self.epoch != epochs:
            if os.path.isfile(path):
                return
            raise UsageError(f"--record_events: events cover {self.epoch} of {epochs} epochs; use a fresh --save_dir")
        save_proxies(path, self.proxies(), count=self.counts.cpu().numpy(), epochs=np.array(epochs))
        if self.partial and os.path.isfile(self.partial):
            os.remove(self.partial)


# ---------------------------------------------------------------------------------------------------------
# Proxies computed on a trained model (over every official train image)

def _all_train(data, batch_size):
    return data.loader(np.arange(len(data.y_train)), batch_size=batch_size)


def heldout_retrain(model, data, epochs=30, lr=0.1, patience=4, batch_size=256, seed=0, amp=False) -> np.ndarray:
    """Held-out retraining (Carlini et al.): fine-tune a copy on the test set (SGD, momentum 0.9, wd 5e-4,
    training augmentation; stop after `patience` epochs without a lower loss); each train image scores the
    symmetric KL between the original and the fine-tuned softmax (probabilities clamped at 1e-10)."""
    tuned = copy.deepcopy(model)
    optimizer = training.build_optimizer(tuned.parameters(), lr)
    loader = data.loader(data.test_indices(), train=True, test=True, batch_size=batch_size, seed=seed)
    best, stale = float("inf"), 0
    for _ in range(epochs):
        loss = training.train_epoch(tuned, loader, optimizer, amp=amp)["loss"].item()  # one sync per epoch
        best, stale = (loss, 0) if loss < best else (best, stale + 1)
        if stale >= patience:
            break
    every = _all_train(data, 1024)
    logp, logq = (training.predict(m, every)[0] for m in (model, tuned))
    logp, logq = (v.softmax(1).clamp_min(1e-10).log() for v in (logp, logq))
    kl = 0.5 * ((logp.exp() * (logp - logq)).sum(1) + (logq.exp() * (logq - logp)).sum(1))
    return kl.cpu().numpy()


def loss_curvature(model, data, h=0.01, batch_size=512) -> np.ndarray:
    """||grad_x l(x + h s) - grad_x l(x)||_2 per image, s = sign(grad_x l(x)) scaled to unit norm, in pixel
    space [0, 1], eval mode. The proxy paper averages this over training; here it is taken once on the
    trained model (no change to the training loop, any model.pt works)."""
    model.eval()
    out = []
    for batch in _all_train(data, batch_size):
        def input_grad(x):
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(F.cross_entropy(model(x), batch.y, reduction="sum"), x)[0]
        g0 = input_grad(batch.x)
        s = g0.sign()
        s = s / s.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (s.dim() - 1))
        out.append((input_grad(batch.x + h * s) - g0).flatten(1).norm(dim=1))
    return torch.cat(out).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------
# How well proxies track the scores

def spearman(a, b):
    """(Spearman rho, n) over the entries finite in both."""
    from scipy.stats import spearmanr
    both = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[both], b[both])[0]) if both.sum() > 2 else float("nan"), int(both.sum())


def correlations(scores, proxies: dict) -> dict:
    """name -> (rho, n) for each proxy against the scores (positive = agrees: both are mem-oriented)."""
    return {name: spearman(scores, values) for name, values in proxies.items()}


def main():
    p = make_parser(__doc__)
    p.add_argument("--mask", "--model_path", dest="model_path", default=None, help="the trained model.pt")
    p.add_argument("--compute", default=None, help="comma list of ho_ret, curvature: computed on --mask and "
                                                   "added to proxies.npz in --save_dir (default: beside the model)")
    p.add_argument("--data_path", "--data", dest="data_path", default="./data", help="dataset folder")
    p.add_argument("--ft_epochs", type=int, default=30, help="ho_ret: fine-tuning epochs at most")
    p.add_argument("--ft_lr", type=float, default=0.1, help="ho_ret: fine-tuning learning rate")
    p.add_argument("--curvature_h", type=float, default=0.01, help="curvature: finite-difference step")
    p.add_argument("--mem_scores", default=None, help="scores to correlate the proxies with")
    p.add_argument("--proxy_file", action="append", default=[], help="proxy file(s) to correlate (repeatable)")
    add_common_args(p)
    args = p.parse_args()
    if args.compute:
        wanted = [c for c in args.compute.split(",") if c]
        bad = [c for c in wanted if c not in ("ho_ret", "curvature")]
        if bad or not args.model_path:
            raise UsageError(f"--compute: needs --mask and a list of ho_ret, curvature (got '{args.compute}')")
        device = get_device(args.device)
        model, record = models.load_model(args.model_path, device)
        data = load_data(record["dataset"], args.data_path, device, (record.get("split") or {}).get("seed", 1))
        started, amp = time.perf_counter(), training.resolve_amp("auto", device)
        compute = {"ho_ret": lambda: heldout_retrain(model, data, args.ft_epochs, args.ft_lr, seed=args.seed,
                                                     amp=amp),
                   "curvature": lambda: loss_curvature(model, data, args.curvature_h)}
        out = os.path.join(args.save_dir or os.path.dirname(os.path.abspath(args.model_path)), "proxies.npz")
        save_proxies(out, {name: compute[name]() for name in wanted})
        args.proxy_file.append(out)
        print(f"{', '.join(wanted)} in {time.perf_counter() - started:.1f}s -> {out}")
    if args.mem_scores and args.proxy_file:
        proxies = {}
        for path in args.proxy_file:
            if not os.path.isfile(path):
                raise UsageError(f"--proxy_file: file '{path}' does not exist")
            with np.load(path, allow_pickle=False) as z:
                proxies.update({k: z[k].astype(np.float64) for k in z.files if k in PROXIES})
        n = len(next(iter(proxies.values()))) if proxies else 0
        scores = load_mem_scores(args.mem_scores, n)
        print(f"{'proxy':<12}{'spearman':>10}{'n':>8}   (both oriented higher = more memorised)")
        for name, (rho, count) in correlations(scores, proxies).items():
            print(f"{name:<12}{rho:>10.3f}{count:>8}")
    elif not args.compute:
        raise UsageError("nothing to do: give --mask with --compute, and/or --mem_scores with --proxy_file")


if __name__ == "__main__":
    run_cli(main)

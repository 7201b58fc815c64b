"""Forget sets by difficulty (RUM): memorisation scores, cheap memorisation proxies, groups, entanglement.

Every score or proxy is one float per *official* train image (NaN = none) and is oriented "higher = more
memorised", so high / mid / low mean the same thing whatever the source:
- scores: Feldman-Zhang files, `.npz` with `memorization` (RUM's CIFAR-10 estimate; estimate_mem.py writes
  the same) or `tr_mem` (Feldman-Zhang's CIFAR-100 release);
- learning-event proxies, recorded by `main_train.py --record_events` into events.npz beside model.pt;
- held-out retraining and loss curvature, computed here on a trained model into proxies.npz.
Groups are drawn from the train split: high = top N, low = bottom N, mid = the N closest to a centre (0.5 for
scores, the median for proxies, as RUM), mix = N/3 of each, disjoint. ES groups cut the train split, sorted
by the distance of its features (original model) to their centroid, into 15 equal bins.

    python forget_sets.py --mask runs/orig/model.pt --compute ho_ret,curvature   # -> runs/orig/proxies.npz
    python forget_sets.py --mem_scores mem.npz --proxy_file runs/orig/events.npz  # Spearman table
"""
import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import models
import training
from datasets import parse_classes
from utils import UsageError, load_checkpoint, save_checkpoint, save_npz

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
ES_BINS = 15
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
    logp, logq = (training.predict(m, every, amp)[0] for m in (model, tuned))
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
# Memorisation groups

def _ranked(scores, pool, seed):
    """The pool's official indices with a finite score, ascending; ties in random (seeded) order, so that
    the many equal scores of a subsampling estimate do not favour low indices."""
    pool = np.asarray(pool, dtype=np.int64)
    pool = pool[np.isfinite(scores[pool])]
    return pool[np.lexsort((np.random.default_rng(seed).random(len(pool)), scores[pool]))]


def _closest(ranked, scores, n, centre):
    return ranked[np.argsort(np.abs(scores[ranked] - centre), kind="stable")[:n]]


def _check_size(need, have, what="--num_indexes_to_replace", of="the train-split images with a score"):
    if not 0 < need <= have:
        raise UsageError(f"{what}: {need} is not in 1..{have} ({of})")


def select_group(scores, group, n, centre=None, pool=None, seed=0) -> np.ndarray:
    """One group of n (sorted official indices): high = top n, low = bottom n, mid = the n closest to
    `centre` (None: the pool's median). pool: where to choose (default: every image with a finite score)."""
    pool = np.flatnonzero(np.isfinite(scores)) if pool is None else pool
    ranked = _ranked(scores, pool, seed)
    _check_size(n, len(ranked))
    centre = np.median(scores[ranked]) if centre is None else centre
    chosen = {"high": lambda: ranked[-n:], "low": lambda: ranked[:n],
              "mid": lambda: _closest(ranked, scores, n, centre)}[group]()
    return np.sort(chosen)


def groups(scores, n, centre=None, pool=None, seed=0) -> dict:
    """Three disjoint groups of n each: high (top n), low (bottom n), mid (the n closest to `centre`, None =
    the pool's median, among the rest). For RUM's sequential runner."""
    pool = np.flatnonzero(np.isfinite(scores)) if pool is None else pool
    ranked = _ranked(scores, pool, seed)
    _check_size(3 * n, len(ranked), of="three groups from the train-split images with a score")
    centre = np.median(scores[ranked]) if centre is None else centre
    mid = _closest(ranked[n:-n], scores, n, centre)
    return {"high": np.sort(ranked[-n:]), "mid": np.sort(mid), "low": np.sort(ranked[:n])}


def mix_groups(scores, n, centre=None, pool=None, seed=0) -> dict:
    """RUM's mix forget set of n: groups() of n/3 each (n must be a multiple of 3)."""
    if n is None or n % 3:
        raise UsageError(f"--num_indexes_to_replace: mix needs a multiple of 3 (equal thirds), got {n}")
    return groups(scores, n // 3, centre, pool, seed)


def shuffle_groups(groups: dict, seed: int) -> dict:
    """RUM's shuffle baseline: the same images pooled and dealt into random groups of the same sizes."""
    pooled = np.concatenate(list(groups.values()))
    pooled = pooled[np.random.default_rng(seed).permutation(len(pooled))]
    cuts = np.cumsum([len(g) for g in groups.values()])[:-1]
    return {k: np.sort(part) for k, part in zip(groups, np.split(pooled, cuts))}


# ---------------------------------------------------------------------------------------------------------
# Entanglement (RUM 2.9.5), on penultimate features of the original model

def features(model, data, indices, batch_size=1024) -> torch.Tensor:
    """model.embed of train images (eval mode, no augmentation), float32 [len(indices), D] on the device."""
    return training.embed(model, data.loader(indices, batch_size=batch_size))


def entanglement_score(f_retain: torch.Tensor, f_forget: torch.Tensor) -> float:
    """ES = (mean within-set squared distance of retain + of forget) / (1/2 (|mu_r - mu|^2 + |mu_f - mu|^2)),
    mu = (mu_r + mu_f) / 2. Higher = more entangled. (RUM averages per-batch means; these are exact.)"""
    r, f = f_retain.double(), f_forget.double()
    mu_r, mu_f = r.mean(0), f.mean(0)
    mu = (mu_r + mu_f) / 2
    within = (r - mu_r).square().sum(1).mean() + (f - mu_f).square().sum(1).mean()
    between = 0.5 * ((mu_r - mu).square().sum() + (mu_f - mu).square().sum())
    return (within / between).item()


def es_bins(feats: torch.Tensor, pool, bins: int = ES_BINS) -> list:
    """The pool (official indices; feats row i belongs to pool[i]) sorted by L2 distance of its feature to
    the pool's centroid, ascending, cut into `bins` equal bins (the len % bins farthest are left out)."""
    dist = (feats - feats.mean(0)).norm(dim=1).cpu().numpy()
    order = np.asarray(pool)[np.argsort(dist, kind="stable")]
    size = len(order) // bins
    return [np.sort(order[k * size:(k + 1) * size]) for k in range(bins)]


# ---------------------------------------------------------------------------------------------------------
# The forget flags (utils.add_forget_args) -> named groups (RUM's runner) or one forget set (datasets.forget_set)

RUM_ES_BINS = (3, 12, 14)  # the ES bins RUM forgets (--group_index); --es_group -1 takes N/3 of each


def _original_model(args, data, flag):
    path = getattr(args, "model_path", None)
    if not path:
        raise UsageError(f"{flag}: needs the original model for its features (--mask model.pt)")
    return models.load_model(path, data.x_train.device)[0]


def difficulty_scores(args, data):
    """(scores [N], default centre, source name) of --mem_scores or --proxy_file/--proxy."""
    n = len(data.y_train)
    if args.mem_scores and args.proxy_file:
        raise UsageError("--mem_scores: give scores or --proxy_file, not both")
    if args.mem_scores:
        return load_mem_scores(args.mem_scores, n), 0.5, "mem"
    if args.proxy_file:
        return load_proxy(args.proxy_file, args.proxy, n), None, args.proxy
    raise UsageError("--forget_group: give --mem_scores FILE or --proxy_file FILE (with --proxy NAME)")


def _es_groups(args, data, pool, model) -> dict:
    k, n = args.es_group, args.num_indexes_to_replace
    if k != -1 and not 0 <= k < ES_BINS:
        raise UsageError(f"--es_group: {k} is not in 0..{ES_BINS - 1} (or -1: N/3 of each of bins {RUM_ES_BINS})")
    if k == -1 and n is not None and n % 3:
        raise UsageError(f"--num_indexes_to_replace: --es_group -1 needs a multiple of 3 (equal thirds), got {n}")
    bins = es_bins(features(model, data, pool), pool)
    size = None if n is None else n // 3 if k == -1 else n
    rng = np.random.default_rng(args.seed)
    named = {}
    for b in RUM_ES_BINS if k == -1 else (k,):
        named[f"es{b}"] = bins[b]
        if size is not None:
            _check_size(size, len(bins[b]), of=f"the size of ES group {b}")
            named[f"es{b}"] = np.sort(rng.choice(bins[b], size, replace=False))
    return named


def _from_args(args, data, model=None):
    """(named groups, description, the original model or None) from the forget flags."""
    group, es_group, n = args.forget_group, args.es_group, args.num_indexes_to_replace
    if group and es_group is not None:
        raise UsageError("--es_group: choose --forget_group or --es_group, not both")
    if not group and es_group is None:
        raise UsageError("--mem_scores/--proxy_file: choose a group with --forget_group high|mid|low|mix")
    classes = parse_classes(args.class_to_replace, data.info.num_classes)
    train = data.train_idx
    pool = train if classes is None else train[np.isin(data.y_train_np[train], classes)]
    if es_group is not None:
        model = model if model is not None else _original_model(args, data, "--es_group")
        named = _es_groups(args, data, pool, model)
        desc = {"kind": "es" + "_".join(k[2:] for k in named)}
    else:
        if n is None:
            raise UsageError("--num_indexes_to_replace: give the group size for --forget_group")
        scores, centre, source = difficulty_scores(args, data)
        centre = args.mem_centre if args.mem_centre is not None else centre
        named = (mix_groups(scores, n, centre, pool, args.seed) if group == "mix"
                 else {group: select_group(scores, group, n, centre, pool, args.seed)})
        desc = {"kind": f"mem_{group}" + ("" if source == "mem" else f"_{source}"),
                "source": args.mem_scores or f"{args.proxy_file}:{args.proxy}",
                "centre": "median" if centre is None else centre}
        if model is None and getattr(args, "model_path", None):
            model = _original_model(args, data, "--forget_group")
    return named, {**desc, "classes": classes}, model


def groups_from_args(args, data, model=None) -> dict:
    """Disjoint named groups (sorted official indices) from the forget flags, within the train split (and the
    classes of --class_to_replace): --forget_group mix -> high, mid, low of N/3 each; high|mid|low -> that
    group of N; --es_group K -> esK (N random of the bin, or all of it); --es_group -1 -> es3, es12, es14 of
    N/3 each. `model`: the original (loaded from --mask when an ES group needs it and none is given)."""
    return _from_args(args, data, model)[0]


def forget_set_es(model, data, forget) -> float:
    """ES of a forget set (official indices) against the rest of the train split, on the model's features."""
    feats = features(model, data, data.train_idx)
    inside = torch.from_numpy(np.isin(data.train_idx, forget)).to(feats.device)
    return entanglement_score(feats[~inside], feats[inside])


def select(args, data):
    """datasets.forget_set's branch for these flags: (sorted official indices, description); the description
    carries the forget set's ES when the original model is known (--mask)."""
    named, desc, model = _from_args(args, data)
    chosen = np.sort(np.concatenate(list(named.values()))).astype(np.int64)
    if model is not None:
        desc["es"] = forget_set_es(model, data, chosen)
    return chosen, {**desc, "n": int(len(chosen))}


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
    from datasets import load_data
    from utils import add_common_args, get_device, make_parser
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
    from utils import run_cli
    run_cli(main)

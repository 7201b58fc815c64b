"""Forget sets by difficulty (RUM): groups by memorisation score or proxy, and by entanglement.

Groups are drawn from the train split: high = top N, low = bottom N, mid = the N closest to a centre (0.5 for
scores, the median for proxies, as RUM), mix = N/3 of each, disjoint. ES groups cut the train split, sorted
by the distance of its features (original model) to their centroid, into 15 equal bins.
"""
import numpy as np
import torch

import models
import training
from datasets import parse_classes
from forget_sets.memorization import load_mem_scores, load_proxy
from utils import UsageError

ES_BINS = 15

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
# The forget flags (utils.add_forget_args) -> named groups (RUM's runner) or one forget set (forget_set)

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
    """forget_sets.forget_set's branch for these flags: (sorted official indices, description); the description
    carries the forget set's ES when the original model is known (--mask)."""
    named, desc, model = _from_args(args, data)
    chosen = np.sort(np.concatenate(list(named.values()))).astype(np.int64)
    if model is not None:
        desc["es"] = forget_set_es(model, data, chosen)
    return chosen, {**desc, "n": int(len(chosen))}



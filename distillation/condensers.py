"""Condensers: small labelled sets made from the retain part of a train split, which condense.py writes in the
distilled.pt format. Plain functions of tensors and seeded generators; no argparse, no flags.

Forget sets. random, herding, kcenter and dm take a pool of official train indices (the train split minus
the forget set) and read pixels only at those indices, so perturbing a forget image leaves their output
bitwise unchanged (tests/test_distillation_condensers.py checks this; Blend is below). A class whose every train image is
forgotten contributes nothing.

  random   ipc images per class, drawn with a seeded numpy generator.
  herding  greedy herding on the original model's penultimate features: each pick brings the running mean of
           the chosen features closest to the class mean.
  kcenter  greedy k-center on the same features. The first pick is the image nearest the class mean (so no
           seed is involved), then each pick is the image farthest from everything chosen so far.
  dm       distribution matching (Zhao & Bilen, WACV'23): learned images whose mean embedding under a freshly
           initialised ConvNetD3, drawn anew every iteration, matches the mean embedding of a real batch of
           their class, both under the same DSA draws. Optionally one learnable weight per image.
  blend    Blend (Khan 2025, peers.md 2.2): per class k-means into ipc clusters on a fixed random ConvNetD3's
           features, and per cluster one image = a learned affine combination of its members matched to the
           cluster's mean embedding. Computed once for the whole train split (the offline stage); a forget
           request only selects (blend_request).

Blend and forget sets (a choice). The offline stage runs once on the whole train split, forget images
included, as the paper does and as reuse across requests requires. A request then keeps the blend of every
cluster without a forget image and, for each cluster with one, its retain members as real images; it reads
pixels only of those retain members. So, given the offline stage, the reduced set does not depend on any
forget image's pixels (tested bitwise), and no kept blend mixes a forget image. What the forget images did
influence offline is the clustering: which cluster a retain image falls in, and so whether it is kept real
or blended, came from k-means over features that included them. Making the offline stage per request on
the retain part only would remove that too, at the offline cost each time.
"""
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

import training
from datasets import DeviceLoader
from distillation import experts
from distillation import matching as dd
from models.common import Normalize
from training import augment
from utils import UsageError, load_checkpoint, save_checkpoint, write_json

CHUNK_PIXELS = 8192 * 32 * 32  # pixels per forward pass in DM and Blend (8192 CIFAR images): memory, not maths


# ---------------------------------------------------------------------------------------------------------
# Pools and features

def class_pools(pool: np.ndarray, y: np.ndarray, num_classes: int, ipc: int) -> list:
    """[(class, its official indices in pool)] for the classes with images in pool; ipc more than a class
    has is a usage error."""
    out = []
    for c in range(num_classes):
        members = pool[y[pool] == c]
        if len(members) == 0:
            continue  # every image of the class is forgotten: it has nothing to contribute
        if len(members) < ipc:
            raise UsageError(f"--ipc: {ipc} is more than the {len(members)} images of class {c} available")
        out.append((c, members))
    if not out:
        raise UsageError("the forget set covers the whole train split; there is nothing to condense")
    return out


def embed(model, x_uint8, batch=1024):
    """Penultimate features of uint8 images, in batches (the labels a loader carries are unused here)."""
    unlabelled = torch.zeros(len(x_uint8), dtype=torch.long, device=x_uint8.device)
    return training.embed(model, DeviceLoader(x_uint8, unlabelled, batch_size=batch))


def gather(x, indices):
    """Rows of x at official indices (a numpy array or a tensor), gathered on x's device."""
    return x.index_select(0, torch.as_tensor(indices, device=x.device))


def images_per_chunk(x: torch.Tensor) -> int:
    """How many images of x's size one forward pass may take (CHUNK_PIXELS)."""
    return max(1, CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))


def pad_groups(values: torch.Tensor, sizes):
    """values [N, ...] stored group after group (sizes: host ints) -> ([G, max size, ...] zero-padded,
    valid [G, max size] bool): lets every group be processed in one batched op."""
    device, n = values.device, len(values)
    sizes_t = torch.as_tensor(sizes, device=device)
    group = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes_t, output_size=n)
    pos = torch.arange(n, device=device) - (sizes_t.cumsum(0) - sizes_t).index_select(0, group)
    out = values.new_zeros((len(sizes), max(sizes)) + tuple(values.shape[1:]))
    out[group, pos] = values
    valid = torch.zeros(len(sizes), max(sizes), dtype=torch.bool, device=device)
    valid[group, pos] = True
    return out, valid


# ---------------------------------------------------------------------------------------------------------
# Coresets: random, herding, k-center

@torch.no_grad()
def herding(features: torch.Tensor, k: int) -> list:
    """Positions of k rows of `features` chosen greedily so the mean of the chosen tracks the mean of all."""
    mu, chosen, total = features.mean(0), [], torch.zeros_like(features[0])
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for t in range(k):
        dist = ((total + features) / (t + 1) - mu).norm(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        total += features[i]
    return chosen


@torch.no_grad()
def kcenter(features: torch.Tensor, k: int) -> torch.Tensor:
    """Positions [k] of greedy k-center: first the row nearest the mean, then repeatedly the row whose distance
    to its nearest chosen row is largest. No host sync (the picks stay on the device)."""
    first = (features - features.mean(0)).norm(dim=1).argmin().view(1)
    chosen, nearest = [first], (features - features.index_select(0, first)).norm(dim=1)
    nearest.index_fill_(0, first, -1.0)  # chosen rows are never picked again, even among duplicates
    for _ in range(k - 1):
        i = nearest.argmax().view(1)
        chosen.append(i)
        nearest = torch.minimum(nearest, (features - features.index_select(0, i)).norm(dim=1))
        nearest.index_fill_(0, i, -1.0)
    return torch.cat(chosen)


def select_real(method: str, pools: list, ipc: int, seed: int, model=None, x_train=None) -> np.ndarray:
    """ipc official indices per class, class-major: random (seeded), herding or kcenter (model features)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for _, members in pools:
        if method == "random":
            chosen.append(np.sort(rng.choice(members, ipc, replace=False)))
            continue
        feats = embed(model, gather(x_train, members))
        picks = herding(feats, ipc) if method == "herding" else kcenter(feats, ipc).cpu().numpy()
        chosen.append(members[picks])
    return np.concatenate(chosen).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# DM: distribution matching

def dm_lr_img(ipc: int) -> float:
    """DM's published image learning rate: 1 up to ipc 50, 10 above (peers.md 6.2)."""
    return 1.0 if ipc <= 50 else 10.0


@dataclass
class DMConfig:
    iterations: int = 20000
    lr_img: float = 1.0                                  # SGD (momentum 0.5) on the images, normalised space
    batch_real: int = 256                                # real images per class per iteration
    dsa_strategy: Optional[str] = augment.DSA_STRATEGY   # None: no augmentation
    lr_weight: float = 0.0                               # > 0: learn one weight per image at this lr
    arch: str = "convnetd3"                              # the embedding network, fresh every iteration


@torch.no_grad()
def reinit_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Redraw every Conv2d/Linear from `generator` with PyTorch's default init (kaiming_uniform with a=sqrt(5)
    is U(+-1/sqrt(fan_in)); the bias uses the same bound): a fresh network without a host round trip. The
    norm layers keep weight 1 and bias 0, which nothing here changes."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1 / math.sqrt(m.weight[0].numel())
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=generator)
    return net


def dm_loss(net, real, syn, weights, classes: int, augment_fn):
    """sum_c || mean emb(real_c) - mean emb(syn_c) ||^2 for class-major batches real [classes * b, ...] and
    syn [classes * ipc, ...]. With weights, the synthetic mean is weighted by w^2 (the loss weight of
    distillation), normalised within the class."""
    with torch.no_grad():
        real_emb = net.embed(augment_fn(real))
    real_mean = real_emb.view(classes, -1, real_emb.shape[1]).mean(1)
    emb = net.embed(augment_fn(syn)).view(classes, -1, real_emb.shape[1])
    if weights is None:
        syn_mean = emb.mean(1)
    else:
        w2 = weights.square().view(classes, -1, 1)
        syn_mean = (w2 * emb).sum(1) / w2.sum(1)
    return (real_mean - syn_mean).square().sum()


class ClassSampler:
    """b real images per class without replacement, for a range of classes in one op: the pool's official
    indices padded into a [classes, max class size] table, and top-b of random keys per row."""

    def __init__(self, pools: list, device):
        members = [m for _, m in pools]
        self.table, self.valid = pad_groups(torch.as_tensor(np.concatenate(members), device=device),
                                            [len(m) for m in members])
        self.smallest = min(len(m) for m in members)

    def sample(self, classes: slice, b: int, generator) -> torch.Tensor:
        valid = self.valid[classes]
        keys = torch.rand(valid.shape, device=valid.device, generator=generator).masked_fill_(~valid, -1.0)
        return self.table[classes].gather(1, keys.topk(b, dim=1).indices)  # [classes, b]


class DistributionMatching:
    """The state of a DM run and its iteration. Images live in the normalised space (x - mean) / std, where
    DM's published lr_img applies (the distillation's constants, experts.training_norm, which are DM's own
    on CIFAR-10); every random choice derives from one CPU generator (seeded with `seed`),
    so state_dict() / load_state_dict() resume a run exactly.

    Per iteration: one fresh network (reinit_), one DSA group and seed for all classes, b real images per
    class. DM draws a DSA seed per class; here all classes share one draw per iteration, which leaves each
    class's sequence of updates identically distributed (a class's loss involves only its own images), and
    lets all classes share one forward pass (classes go in chunks of CHUNK_PIXELS, for memory only)."""

    def __init__(self, x_train, pools: list, init_indices: np.ndarray, info, cfg: DMConfig, seed: int):
        device = x_train.device
        self.x, self.cfg, self.num = x_train, cfg, len(pools)
        mean, std = experts.training_norm(info)
        shape = (1, -1, 1, 1)
        self.space = dd.TrainingSpace(mean=torch.tensor(mean, device=device).view(shape),
                                      std=torch.tensor(std, device=device).view(shape))
        self.ipc = len(init_indices) // self.num
        self.sampler = ClassSampler(pools, device)
        # one batch size for all classes, so they share a forward pass: at most the smallest class (DM takes
        # all of a class smaller than batch_real, for that class alone)
        self.batch_real = min(cfg.batch_real, self.sampler.smallest)
        labels = torch.as_tensor([c for c, _ in pools], device=device).repeat_interleave(self.ipc)
        self.syn = dd.SyntheticSet(self.space(gather(x_train, init_indices)), labels, 0.0, cfg.lr_img, 0.0,
                                   cfg.lr_weight)
        self.net = experts.build_expert(cfg.arch, info, 0).to(device).requires_grad_(False)
        self.groups = augment.parse_strategy(cfg.dsa_strategy) if cfg.dsa_strategy else ()
        per = max(1, images_per_chunk(x_train) // (self.batch_real + self.ipc))
        self.chunks = [slice(c, min(c + per, self.num)) for c in range(0, self.num, per)]
        self.generator = torch.Generator().manual_seed(seed)
        self.device_generator = torch.Generator(device=device)
        self.zero = torch.zeros((), device=device)
        self.iteration = 0

    def _augment(self, x, group, seed):
        if group is None:
            return x
        return augment.dsa_group(x, group, torch.Generator(device=x.device).manual_seed(seed))

    def step(self) -> torch.Tensor:
        """One DM iteration; returns the loss as a device scalar (no host sync)."""
        net_seed, aug_seed = torch.randint(0, 2**62, (2,), generator=self.generator).tolist()
        group = None
        if self.groups:  # chosen on the host: augment.dsa would read its pick back from the device
            group = self.groups[int(torch.randint(len(self.groups), (1,), generator=self.generator))]
        self.device_generator.manual_seed(net_seed)
        reinit_(self.net, self.device_generator)
        syn, ipc = self.syn, self.ipc
        grad_img = torch.zeros_like(syn.images)
        grad_w = torch.zeros_like(syn.weights) if syn.learn_weights else None
        total = self.zero.clone()
        for k, classes in enumerate(self.chunks):
            real = self.space(gather(self.x, self.sampler.sample(classes, self.batch_real,
                                                                 self.device_generator).flatten()))
            rows = slice(classes.start * ipc, classes.stop * ipc)
            with torch.enable_grad():
                images = syn.images[rows]
                weights = syn.weights[rows] if syn.learn_weights else None
                loss = dm_loss(self.net, real, images, weights, classes.stop - classes.start,
                               lambda x: self._augment(x, group, aug_seed + k))
                grads = torch.autograd.grad(loss, [images] + ([weights] if weights is not None else []))
            grad_img[rows] = grads[0]
            if grad_w is not None:
                grad_w[rows] = grads[1]
            total += loss.detach()
        syn.apply(dd.MetaGrad(total, grad_img, self.zero, grad_w))
        self.iteration += 1
        return total

    def state_dict(self) -> dict:
        return {"syn": self.syn.state_dict(), "generator": self.generator.get_state(), "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.syn.load_state_dict(state["syn"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])


# ---------------------------------------------------------------------------------------------------------
# Blend: offline clustering and blending, per-request selection

BLEND = {
    "feature_arch": "convnetd3",  # the random (never trained) feature network
    "kmeans_iters": 100,          # Lloyd iterations at most (k-means++ initialisation)
    "kmeans_tol": 1e-4,           # stop when no centre moves farther than this (checked every 10 iterations)
    "momentum": 0.5,              # SGD momentum of the mixing weights
    "iterations": 12,             # cond_unlearn.py (the condensation benchmark cond.py uses 20)
}


def blend_lr(ipc: int) -> float:
    """The published learning rate of the mixing weights: a cubic fit in ipc (1.22 at ipc 1, 0.166 at 10,
    100 at 100, 9999 at 1000)."""
    return -2.397e-6 * ipc ** 3 + 0.01265 * ipc ** 2 - 0.2558 * ipc + 1.461


def _draw(weights, generator):
    """One column per row of weights [G, n] (>= 0), with probability proportional to the weight: inverse-CDF
    sampling on the device (no host sync)."""
    cdf = weights.cumsum(1)
    u = torch.rand(len(weights), 1, device=weights.device, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=weights.shape[1] - 1)  # [G, 1]


def _sqdist(x, xx, centres):
    """Squared distances [G, n, k] between x [G, n, D] (xx = |x|^2 [G, n]) and centres [G, k, D]."""
    return (xx[:, :, None] - 2 * torch.bmm(x, centres.transpose(1, 2))
            + centres.square().sum(-1)[:, None, :]).clamp_(min=0)


@torch.no_grad()
def kmeans(x, valid, k: int, generator, iters=BLEND["kmeans_iters"], tol=BLEND["kmeans_tol"]) -> torch.Tensor:
    """k-means in G independent groups at once: x [G, n, D] zero-padded, valid [G, n] (every group has at
    least k valid rows). k-means++ initialisation, Lloyd iterations, an empty cluster reseeded to a random
    point of its group. Returns the cluster [G, n] of every row (meaningless where not valid)."""
    G, n, D = x.shape
    xx = x.square().sum(-1)
    pick = lambda idx: x.gather(1, idx[:, :, None].expand(-1, -1, D))  # rows idx [G, m] -> [G, m, D]
    mask = valid.to(x.dtype)
    centres = x.new_zeros(G, k, D)
    centres[:, :1] = pick(_draw(mask, generator))
    nearest = _sqdist(x, xx, centres[:, :1])[:, :, 0]
    for j in range(1, k):
        score = nearest * mask
        score = torch.where(score.sum(1, keepdim=True) > 0, score, mask)  # all covered (duplicates): uniform
        centres[:, j:j + 1] = pick(_draw(score, generator))
        nearest = torch.minimum(nearest, _sqdist(x, xx, centres[:, j:j + 1])[:, :, 0])
    rows = valid.flatten().nonzero().squeeze(1)  # one host sync, before the loop
    slot_base = torch.div(rows, n, rounding_mode="floor") * k
    points = x.flatten(0, 1).index_select(0, rows)
    ones = torch.ones(len(rows), device=x.device, dtype=x.dtype)
    for it in range(iters):
        assign = _sqdist(x, xx, centres).argmin(-1)
        slot = slot_base + assign.flatten().index_select(0, rows)
        sums = x.new_zeros(G * k, D).index_add_(0, slot, points)
        counts = x.new_zeros(G * k).index_add_(0, slot, ones)
        new = (sums / counts.clamp(min=1)[:, None]).view(G, k, D)
        keys = torch.rand(G, n, device=x.device, generator=generator).masked_fill_(~valid, -1.0)
        new = torch.where((counts == 0).view(G, k, 1), pick(keys.topk(k, dim=1).indices), new)
        moved = (new - centres).norm(dim=-1).max()
        centres = new
        if (it + 1) % 10 == 0 and float(moved) <= tol:  # a host sync every ten iterations only
            break
    return _sqdist(x, xx, centres).argmin(-1)


def _mix(x, w, segment, clusters):
    """Blends [clusters, C, H, W]: per cluster sum_i (w_i / sum w) x_i over its members (segment = cluster id
    of each row of x, 0-based)."""
    num = x.new_zeros((clusters,) + tuple(x.shape[1:])).index_add_(0, segment, w.view(-1, 1, 1, 1) * x)
    den = w.new_zeros(clusters).index_add_(0, segment, w)
    return num / den.view(-1, 1, 1, 1)


def learn_blends(net, x, cluster, target, iterations: int, lr: float):
    """Learn the mixing weights of every cluster at once. x [N, C, H, W] pixel images sorted by cluster,
    cluster [N] sorted ids 0..K-1, target [K, D] mean member embeddings. Loss: mean over clusters of the
    MSE (mean over features) between the blend's embedding and the target, as published; SGD momentum 0.5
    on raw weights initialised to 1/n. Returns (blends [K, C, H, W], mixing weights / cluster sum [N],
    loss per iteration [iterations + 1], the last one after the final step)."""
    K = len(target)
    counts = torch.bincount(cluster, minlength=K)
    w = (1.0 / counts.to(x.dtype)).index_select(0, cluster).requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr, momentum=BLEND["momentum"])
    start = [0] + torch.cumsum(counts, 0).tolist()  # host offsets, once
    per = images_per_chunk(x)
    spans = [(k0, min(k0 + per, K)) for k0 in range(0, K, per)]

    def sweep(train: bool):
        """The loss (and, when training, its gradient in w.grad) over all clusters, chunk by chunk."""
        total, blends = torch.zeros((), device=x.device), []
        for k0, k1 in spans:
            a, b = start[k0], start[k1]
            with torch.set_grad_enabled(train):
                mixed = _mix(x[a:b], w[a:b], cluster[a:b] - k0, k1 - k0)
                loss = (net.embed(mixed) - target[k0:k1]).square().mean(1).sum() / K
            if train:
                loss.backward()
            else:
                blends.append(mixed)
            total += loss.detach()
        return total, blends

    losses = []
    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        losses.append(sweep(True)[0])
        opt.step()
    final, blends = sweep(False)
    w = w.detach()
    mix = w / w.new_zeros(K).index_add_(0, cluster, w).index_select(0, cluster)
    return torch.cat(blends), mix, torch.stack(losses + [final]).tolist()


def feature_net(info, seed: int, device):
    """Blend's random ConvNetD3, seeded, taking [0, 1] pixels (normalised inside, as the distillation's)."""
    net = experts.build_expert(BLEND["feature_arch"], info, seed)
    net.normalize = Normalize(*experts.training_norm(info))
    return net.to(device).requires_grad_(False).eval()


def blend_manifest(info, split: dict, n_train: int, ipc: int, iterations: int, lr: float, seed: int) -> dict:
    """What identifies an offline stage: a stored one is reused only when all of this is equal."""
    return {"dataset": info.name, "split": dict(split), "n_train": int(n_train),
            "feature_net": {"arch": BLEND["feature_arch"], "seed": int(seed),
                            "norm": [list(v) for v in experts.training_norm(info)]},
            "ipc": int(ipc), "iterations": int(iterations), "lr": float(lr),
            "kmeans": {"iters": BLEND["kmeans_iters"], "tol": BLEND["kmeans_tol"]}}


def blend_offline(x_train, y_train: np.ndarray, train_idx: np.ndarray, info, ipc: int, iterations: int,
                  lr: float, seed: int) -> dict:
    """The offline stage on the whole train split: features, k-means per class (all classes batched), blends.
    Returns tensors on the CPU: indices (official, sorted by cluster), cluster [N], blends [K, C, H, W]
    in [0, 1] (clamped: negative mixing weights can leave the range), labels [K], mix [N], loss."""
    device = x_train.device
    pools = class_pools(np.asarray(train_idx), y_train, info.num_classes, ipc)
    members = np.concatenate([m for _, m in pools])
    sizes = [len(m) for _, m in pools]
    net = feature_net(info, seed, device)
    feats = embed(net, gather(x_train, members))
    padded, valid = pad_groups(feats, sizes)
    assign = kmeans(padded, valid, ipc, torch.Generator(device=device).manual_seed(seed))[valid]
    klass = torch.repeat_interleave(torch.arange(len(pools), device=device),
                                    torch.as_tensor(sizes, device=device), output_size=len(members))
    # cluster ids 0..K-1 in (class, cluster) order; a cluster left empty by k-means simply has no id
    ids, cluster = torch.unique(klass * ipc + assign, return_inverse=True)
    order = torch.argsort(cluster, stable=True)
    cluster, feats = cluster[order], feats[order]
    indices = members[order.cpu().numpy()]
    K = len(ids)
    target = feats.new_zeros(K, feats.shape[1]).index_add_(0, cluster, feats)
    target /= torch.bincount(cluster, minlength=K).to(feats.dtype)[:, None]
    x = gather(x_train, indices).float() / 255
    blends, mix, losses = learn_blends(net, x, cluster, target, iterations, lr)
    classes = torch.as_tensor([c for c, _ in pools], device=device)
    return {"indices": torch.from_numpy(indices), "cluster": cluster.cpu(), "blends": blends.clamp(0, 1).cpu(),
            "labels": classes[torch.div(ids, ipc, rounding_mode="floor")].cpu(), "mix": mix.cpu(), "loss": losses}


def check_offline(manifest: dict, wanted: dict, where: str) -> None:
    """A stored offline stage made for other data, another feature net or other settings is refused."""
    differ = [k for k in wanted if manifest.get(k) != wanted[k]]
    if differ:
        have = ", ".join(f"{k}={manifest.get(k)}" for k in differ)
        want = ", ".join(f"{k}={wanted[k]}" for k in differ)
        raise UsageError(f"--offline_dir: '{where}' holds a Blend offline stage made with {have}; this run needs "
                         f"{want} (use the same flags, or another --offline_dir)")


def blend_offline_stage(offline_dir: str, wanted: dict, make):
    """(offline dict, reused) from offline_dir/offline.pt when its manifest equals `wanted`; otherwise
    make() -> (offline dict, extra manifest fields such as offline_s) is run and stored there atomically,
    with manifest.json beside it for people."""
    path = os.path.join(offline_dir, "offline.pt")
    if os.path.isfile(path):
        stored = load_checkpoint(path)
        if not isinstance(stored, dict) or "manifest" not in stored:
            raise UsageError(f"--offline_dir: '{path}' is not a Blend offline stage")
        check_offline(stored["manifest"], wanted, offline_dir)
        return stored, True
    offline, extra = make()
    stored = {**offline, "manifest": {**wanted, **extra}}
    save_checkpoint(stored, path)
    write_json(stored["manifest"], os.path.join(offline_dir, "manifest.json"))
    return stored, False


def blend_request(offline: dict, forget: Optional[np.ndarray], x_train, y_train) -> dict:
    """The reduced retain set for one forget request: the blend of every cluster without a forget image,
    then the retain members of the other clusters as real images (official order). Reads pixels only at
    those retain indices."""
    indices, cluster = offline["indices"].numpy(), offline["cluster"].numpy()
    hit = np.zeros(len(indices), bool) if forget is None else np.isin(indices, forget)
    touched = np.isin(cluster, np.unique(cluster[hit]))
    free = np.setdiff1d(np.arange(len(offline["labels"])), cluster[touched])
    real = np.sort(indices[touched & ~hit])
    device = x_train.device
    keep = torch.from_numpy(free)
    images = torch.cat([offline["blends"][keep].to(device), gather(x_train, real).float() / 255])
    labels = torch.cat([offline["labels"][keep].to(device), gather(y_train, real)])
    return {"images": images, "labels": labels, "real_indices": torch.from_numpy(real),
            "blend_clusters": torch.from_numpy(free), "n_blend": len(free), "n_real": len(real)}

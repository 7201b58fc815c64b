"""Weighted trajectory-matching distillation (MTT, with TESLA's estimator as an option): the algorithm.

A synthetic set (images, hard labels, one learnable weight per image) and a learnable step size alpha are
learned so that `syn_steps` SGD steps of a student on the synthetic set, started at an expert checkpoint
theta*_t, land near the expert's checkpoint theta*_{t+M}:

    theta_{k+1} = theta_k - alpha * grad L_k(theta_k),   L_k = mean_{i in b_k} w_i^2 * CE(f(DSA_k(x_i)), y_i)
    J = ||theta_N - theta*_{t+M}||^2 / ||theta_0 - theta*_{t+M}||^2

The weight of image i is w[i] wherever image i lands in a minibatch (the published MU-WDD code indexes
weights by batch position instead, so its weights follow no image).

Meta-gradient of J w.r.t. (images, alpha, weights), three ways (`grad_mode`):
  unroll  MTT: autograd through the kept graph of all N steps (memory grows with N * batch).
  exact   reverse-mode with recomputation: the forward sweep keeps only theta_k, each step's minibatch
          indices and the seed of its DSA draws; the backward sweep recomputes one step at a time and
          carries the adjoint g = dJ/dtheta_{k+1} through g <- g - alpha * H_k g. Same numbers as `unroll`
          (to float rounding) with one step's activations.
  tesla   TESLA's estimator (with its factor-2 bug fixed): the same sweep with g frozen at dJ/dtheta_N, i.e.
          without the Hessian factors (I - alpha H_j), j > k. Exact only for the last step; biased otherwise.
`weight_grad='inner_loss'` replaces dJ/dw by the published MU-WDD heuristic: the sum over steps of
dL_k/dw (which makes SGD down-weight images with a high inner loss), not a gradient of J.

Everything is a plain function of tensors and explicit generators: no argparse, no files except the
figures and snapshot dicts returned to the entry script (distill.py).
"""
import glob
import json
import math
import os
from dataclasses import dataclass
from functools import partial
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

import training
from datasets import DeviceLoader
from distillation import experts
from training import augment
from utils import UsageError

GRAD_MODES = ("exact", "unroll", "tesla")
WEIGHT_GRADS = ("matching", "inner_loss")
SYN_MOMENTUM = 0.5  # MTT's SGD momentum for images and alpha; the weights use it too (MU-WDD)


class Diverged(UsageError):
    """The matching loss or a meta-gradient became non-finite; the synthetic set was not updated."""


# ---------------------------------------------------------------------------------------------------------
# The student: a network evaluated at an arbitrary flat parameter vector

class Student:
    """`student(theta, x)` runs `model` with its parameters replaced by views of the flat vector theta, split
    in model.parameters() order: the order of the buffer's flat trajectories (experts.flat_params)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.requires_grad_(False)  # its own tensors are never used, only their layout
        names, shapes = experts.param_layout(model)
        self.names = names
        self.shapes = [torch.Size(s) for s in shapes]
        self.numels = [s.numel() for s in self.shapes]
        self.num_params = sum(self.numels)

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        views = [v.view(s) for v, s in zip(theta.split(self.numels), self.shapes)]
        return torch.func.functional_call(self.model, dict(zip(self.names, views)), (x,))


# ---------------------------------------------------------------------------------------------------------
# One inner trajectory: the plan (what is random) and the step loss

@dataclass
class StepPlan:
    """Everything random about one inner trajectory, so any step can be recomputed exactly: the minibatch
    (indices into the synthetic set) and the seed of the DSA draws of each step (None: no augmentation)."""
    batches: List[torch.Tensor]
    aug_seeds: List[Optional[int]]


def plan_steps(n: int, batch_syn: int, steps: int, generator: torch.Generator, augmented: bool,
               device="cpu") -> StepPlan:
    """MTT's minibatch schedule: split a fresh permutation of the n images into chunks of batch_syn and use
    them in turn, re-permuting when they run out (with batch_syn = n, every step sees all images). The DSA
    seeds come from the same (CPU) generator, after the permutations."""
    batches, chunks = [], []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch_syn))
        batches.append(chunks.pop(0).to(device))
    seeds = torch.randint(0, 2**62, (steps,), generator=generator).tolist() if augmented else [None] * steps
    return StepPlan(batches, seeds)


def augment_batch(x, seed, strategy):
    """DSA with draws that depend only on `seed`: the recomputation of a step replays them exactly."""
    if seed is None:
        return x
    return augment.dsa(x, torch.Generator(device=x.device).manual_seed(seed), strategy)


def inner_loss(student, theta, images, labels, weights, batch, aug_seed, strategy):
    """L_k = mean over the minibatch of w_i^2 * CE_i (plain mean CE when weights is None); the weight is
    the one of the image, gathered with the same indices as the image."""
    x = augment_batch(images.index_select(0, batch), aug_seed, strategy)
    ce = F.cross_entropy(student(theta, x), labels.index_select(0, batch), reduction="none")
    if weights is None:
        return ce.mean()
    return (weights.index_select(0, batch).square() * ce).mean()


def matching_loss(theta_n, theta_0, target):
    """MTT's normalised distance; the denominator is a constant of the sampled (expert, start)."""
    return (theta_n - target).square().sum() / (theta_0 - target).square().sum()


# ---------------------------------------------------------------------------------------------------------
# Meta-gradients

@dataclass
class MetaGrad:
    loss: torch.Tensor                # J (detached scalar)
    images: torch.Tensor              # dJ/dimages
    lr: torch.Tensor                  # dJ/dalpha
    weights: Optional[torch.Tensor]   # dJ/dw, the heuristic's gradient, or None when weights are not learned


def meta_gradient(student, theta0, target, images, labels, lr, weights, plan: StepPlan, mode="exact",
                  weight_grad="matching", strategy=augment.DSA_STRATEGY) -> MetaGrad:
    """Gradients of the matching loss of one inner trajectory. `weights`: None (unweighted, w = 1, no
    gradient) or a [n] tensor; its gradient is returned when weights.requires_grad."""
    if mode not in GRAD_MODES:
        raise UsageError(f"--grad_mode: '{mode}' is not one of {', '.join(GRAD_MODES)}")
    if weight_grad not in WEIGHT_GRADS:
        raise UsageError(f"--weight_grad: '{weight_grad}' is not one of {', '.join(WEIGHT_GRADS)}")
    learn_w = weights is not None and weights.requires_grad
    step = partial(inner_loss, student, labels=labels, strategy=strategy)
    if mode == "unroll":
        return _unrolled(step, theta0, target, images, lr, weights, plan, learn_w, weight_grad)
    return _reverse(step, theta0, target, images, lr, weights, plan, learn_w, weight_grad,
                    propagate=mode == "exact")


def _unrolled(step, theta0, target, images, lr, weights, plan, learn_w, weight_grad):
    """MTT: keep every step's graph (create_graph) and backpropagate J through all of them."""
    heuristic = learn_w and weight_grad == "inner_loss"
    theta = theta0.clone().requires_grad_(True)
    inner_w = torch.zeros_like(weights) if heuristic else None
    for batch, seed in zip(plan.batches, plan.aug_seeds):
        loss = step(theta, images=images, weights=weights, batch=batch, aug_seed=seed)
        grads = torch.autograd.grad(loss, [theta, weights] if heuristic else [theta], create_graph=True)
        if heuristic:
            inner_w += grads[1].detach()
        theta = theta - lr * grads[0]
    J = matching_loss(theta, theta0, target)
    wrt = [images, lr] + ([weights] if learn_w and not heuristic else [])
    grads = torch.autograd.grad(J, wrt)
    gw = inner_w if heuristic else (grads[2] if learn_w else None)
    return MetaGrad(J.detach(), grads[0], grads[1], gw)


def _reverse(step, theta0, target, images, lr, weights, plan, learn_w, weight_grad, propagate):
    """Forward sweep without graphs (keep theta_k), then one recomputed step at a time, last to first:
    G_k = grad L_k(theta_k) with a graph, and one VJP of G_k . g w.r.t. (images, weights, theta_k) gives
    the images' and weights' share (times -alpha) and H_k g. alpha's share is -G_k . g.
    propagate=False freezes g at dJ/dtheta_N (TESLA)."""
    heuristic = learn_w and weight_grad == "inner_loss"
    alpha = lr.detach()
    x_const = images.detach()
    w_const = None if weights is None else weights.detach()

    thetas, inner_w = [theta0], (torch.zeros_like(w_const) if heuristic else None)
    for batch, seed in zip(plan.batches, plan.aug_seeds):
        theta = thetas[-1].detach().requires_grad_(True)
        w = w_const.clone().requires_grad_(True) if heuristic else w_const
        with torch.enable_grad():
            loss = step(theta, images=x_const, weights=w, batch=batch, aug_seed=seed)
            grads = torch.autograd.grad(loss, [theta, w] if heuristic else [theta])
        if heuristic:
            inner_w += grads[1]
        thetas.append(thetas[-1] - alpha * grads[0])

    J = matching_loss(thetas[-1], theta0, target)
    g = 2 * (thetas[-1] - target) / (theta0 - target).square().sum()  # dJ/dtheta_N
    g_images, g_lr = torch.zeros_like(x_const), torch.zeros((), device=x_const.device, dtype=x_const.dtype)
    match_w = learn_w and not heuristic
    g_w = torch.zeros_like(w_const) if match_w else None
    for k in reversed(range(len(plan.batches))):
        theta_k = thetas[k].detach().requires_grad_(True)
        x = x_const.clone().requires_grad_(True)
        w = w_const.clone().requires_grad_(True) if match_w else w_const
        with torch.enable_grad():
            loss = step(theta_k, images=x, weights=w, batch=plan.batches[k], aug_seed=plan.aug_seeds[k])
            G = torch.autograd.grad(loss, theta_k, create_graph=True)[0]
            wrt = [x] + ([w] if match_w else []) + ([theta_k] if propagate else [])
            vjp = torch.autograd.grad((G * g).sum(), wrt)
        g_lr -= (G.detach() * g).sum()
        g_images -= alpha * vjp[0]
        if match_w:
            g_w -= alpha * vjp[1]
        if propagate:
            g = g - alpha * vjp[-1]
    return MetaGrad(J.detach(), g_images, g_lr, inner_w if heuristic else g_w)


# ---------------------------------------------------------------------------------------------------------
# The learned state

class SyntheticSet:
    """Images (training space), hard labels, alpha and per-image weights, with their optimizers
    (SGD, momentum 0.5). lr_weights == 0: the weights are not learned and stay exactly 1.
    lr_floor: alpha never goes below it (MTT lets alpha go negative, which trains nothing; see apply)."""

    def __init__(self, images, labels, lr_init, lr_img, lr_lr, lr_weights, lr_floor=0.0):
        device = images.device
        self.lr_floor = float(lr_floor)
        self.images = images.detach().clone().requires_grad_(True)
        self.labels = labels.to(device)
        self.lr = torch.tensor(float(lr_init), device=device, requires_grad=True)
        self.learn_weights = lr_weights > 0
        self.weights = torch.ones(len(labels), device=device, requires_grad=self.learn_weights)
        self.opt_img = torch.optim.SGD([self.images], lr=lr_img, momentum=SYN_MOMENTUM)
        self.opt_lr = torch.optim.SGD([self.lr], lr=lr_lr, momentum=SYN_MOMENTUM)
        self.opt_w = (torch.optim.SGD([self.weights], lr=lr_weights, momentum=SYN_MOMENTUM)
                      if self.learn_weights else None)

    @property
    def lr_value(self) -> float:
        return float(self.lr.detach())

    @property
    def inner_weights(self):
        """What the inner loss sees: None (plain CE) when the weights are not learned."""
        return self.weights if self.learn_weights else None

    def loss_weights(self) -> torch.Tensor:
        """w^2 renormalised to mean 1: a consumer's per-sample loss multiplier (DESIGN.md)."""
        w2 = self.weights.detach().square()
        return w2 / w2.mean()

    def apply(self, grad: MetaGrad) -> torch.Tensor:
        """One SGD-momentum step on images, alpha and weights; then the weights back to mean 1 (MU-WDD).
        Returns whether alpha was clamped at lr_floor (a 0-d bool tensor: no host sync here)."""
        self.images.grad, self.lr.grad = grad.images, grad.lr
        self.opt_img.step()
        self.opt_lr.step()
        clamped = self.lr.detach() < self.lr_floor
        with torch.no_grad():
            self.lr.clamp_(min=self.lr_floor)
        if self.learn_weights:
            self.weights.grad = grad.weights
            self.opt_w.step()
            with torch.no_grad():
                self.weights.mul_(len(self.weights) / self.weights.sum())
        for p in (self.images, self.lr, self.weights):
            p.grad = None
        return clamped

    def values(self):
        """Copies of the learned tensors (not the optimizer states), for restore()."""
        return [p.detach().clone() for p in (self.images, self.lr, self.weights)]

    def restore(self, values) -> None:
        with torch.no_grad():
            for p, v in zip((self.images, self.lr, self.weights), values):
                p.copy_(v)

    def state_dict(self) -> dict:
        return {"images": self.images.detach().cpu(), "lr": self.lr.detach().cpu(),
                "weights": self.weights.detach().cpu(), "opt_img": self.opt_img.state_dict(),
                "opt_lr": self.opt_lr.state_dict(), "opt_w": self.opt_w.state_dict() if self.opt_w else None}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"])
            self.lr.copy_(state["lr"])
            self.weights.copy_(state["weights"])
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        if self.opt_w is not None:
            self.opt_w.load_state_dict(state["opt_w"])


# ---------------------------------------------------------------------------------------------------------
# Experts and the training space

class TrainingSpace:
    """The space the experts were trained in: ZCA-whitened [0, 1] pixels, or (x - mean) / std."""

    def __init__(self, zca=None, mean=None, std=None):
        self.zca, self.mean, self.std = zca, mean, std

    @classmethod
    def of_buffer(cls, path: str, record: dict, device) -> "TrainingSpace":
        return cls.of_record(record, experts.load_zca(path, record), device)

    @classmethod
    def of_record(cls, record: dict, zca, device) -> "TrainingSpace":
        """From a buffer or distilled.pt record: its ZCA (loaded by the caller) or its norm_mean / norm_std."""
        if zca is not None:
            return cls(zca=zca.to(device))
        shape = (1, -1, 1, 1)
        return cls(mean=torch.tensor(record["norm_mean"], device=device).view(shape),
                   std=torch.tensor(record["norm_std"], device=device).view(shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images -> training space."""
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        return self.zca(x) if self.zca is not None else (x - self.mean) / self.std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Training space -> [0, 1] pixels (inverse ZCA or un-normalise, then clamp)."""
        x = x.detach().float()
        x = self.zca.inverse(x) if self.zca is not None else x * self.std + self.mean
        return x.clamp(0, 1)

    def record(self) -> dict:
        return {"zca": None if self.zca is None else self.zca.state(),
                "norm_mean": None if self.mean is None else self.mean.flatten().tolist(),
                "norm_std": None if self.std is None else self.std.flatten().tolist()}


class ExpertPool:
    """The experts of a buffer folder; each iteration draws one uniformly, then a start epoch. Files are
    memory-mapped, so only the two snapshots an iteration needs are read; load_all copies every
    trajectory to the device up front instead (faster sampling, more memory)."""

    def __init__(self, records: list, device, load_all=False, max_experts=None):
        self.entries = [(rec["trajectories"], j) for rec in records for j in range(len(rec["trajectories"]))]
        if max_experts is not None:
            self.entries = self.entries[:max_experts]
        self.device = device
        self.loaded = torch.stack([t[j] for t, j in self.entries]).to(device) if load_all else None
        self.num_snapshots = self.entries[0][0].shape[1]

    def __len__(self):
        return len(self.entries)

    def sample(self, generator, max_start_epoch: int, expert_epochs: int):
        """(theta_start, theta_target, expert, start) with expert, start drawn from the CPU generator."""
        e = int(torch.randint(len(self.entries), (1,), generator=generator))
        s = int(torch.randint(max_start_epoch, (1,), generator=generator))
        traj = self.loaded[e] if self.loaded is not None else self.entries[e][0][self.entries[e][1]]
        return (traj[s].to(self.device, torch.float32), traj[s + expert_epochs].to(self.device, torch.float32),
                e, s)


# ---------------------------------------------------------------------------------------------------------
# Initialisation

def init_pool(source_indices, train_idx) -> np.ndarray:
    """Where real initial images may come from: the experts' training source (never a forget index), minus
    the validation split that picks best.pt."""
    return np.intersect1d(np.asarray(source_indices), np.asarray(train_idx))


def real_init(y_train: np.ndarray, pool: np.ndarray, ipc: int, num_classes: int, generator) -> np.ndarray:
    """ipc random official train indices per class from pool, class-major ([class 0 x ipc, class 1 ...])."""
    chosen = []
    for c in range(num_classes):
        candidates = pool[y_train[pool] == c]
        if len(candidates) < ipc:
            raise UsageError(f"--ipc: {ipc} images per class, but class {c} has only {len(candidates)} images "
                             "available for initialisation (training source minus validation split)")
        order = torch.randperm(len(candidates), generator=generator)[:ipc].numpy()
        chosen.append(candidates[order])
    return np.concatenate(chosen)


def class_labels(num_classes: int, ipc: int, device="cpu") -> torch.Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


# ---------------------------------------------------------------------------------------------------------
# One iteration

@dataclass
class IterConfig:
    syn_steps: int
    batch_syn: int
    max_start_epoch: int
    expert_epochs: int
    grad_mode: str = "exact"
    weight_grad: str = "matching"
    dsa_strategy: Optional[str] = augment.DSA_STRATEGY  # None: no augmentation in the inner loop


def distill_iteration(student, syn: SyntheticSet, pool: ExpertPool, generator, cfg: IterConfig) -> dict:
    """Sample (expert, start), compute the meta-gradient, update the synthetic set. When the loss, a
    gradient or the updated set is not finite, restores the previous images, alpha and weights and raises
    Diverged. One host sync."""
    theta0, target, expert, start = pool.sample(generator, cfg.max_start_epoch, cfg.expert_epochs)
    plan = plan_steps(len(syn.labels), cfg.batch_syn, cfg.syn_steps, generator, cfg.dsa_strategy is not None,
                      syn.images.device)
    grad = meta_gradient(student, theta0, target, syn.images, syn.labels, syn.lr, syn.inner_weights, plan,
                         cfg.grad_mode, cfg.weight_grad, cfg.dsa_strategy)
    before = syn.values()
    clamped = syn.apply(grad)
    # one host sync: the statistics, and whether the loss, the gradients and the updated set are finite
    w = syn.weights.detach()
    stats = [grad.loss, syn.lr.detach(), w.std() if len(w) > 1 else w.new_zeros(()), w.min(), w.max(),
             clamped.to(w.dtype)]
    checked = [grad.loss, grad.lr, grad.images.abs().amax(), syn.images.detach().abs().amax(), syn.lr.detach()]
    checked += [] if grad.weights is None else [grad.weights.abs().amax(), w.abs().amax()]
    finite = torch.isfinite(torch.stack(checked)).all().to(w.dtype)
    *stats, ok = torch.stack([*stats, finite]).tolist()
    if not ok:
        syn.restore(before)  # keep the last good state for the snapshot
        raise Diverged(f"the matching loss, its gradient or the updated set became non-finite (loss "
                       f"{stats[0]:.4g}, expert {expert}, start epoch {start}); lower --lr_img / --lr_lr / "
                       "--lr_weights")
    stats = dict(zip(("loss", "lr", "w_std", "w_min", "w_max", "lr_clamped"), stats), expert=expert, start=start)
    stats["lr_clamped"] = bool(stats["lr_clamped"])
    return stats


# ---------------------------------------------------------------------------------------------------------
# Evaluation: fresh networks trained on the synthetic set (MTT's evaluate_synset)

def eval_seed(seed: int, iteration: int, net: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, net]).generate_state(1)[0])


def train_on_synset(model, images, labels, loss_weights, lr, epochs, batch_size=256, strategy=None, seed=0):
    """MTT's recipe: SGD(lr, momentum 0.9, wd 5e-4), epochs 0..epochs inclusive (epochs + 1 passes), lr x0.1
    with a fresh optimizer after epoch index epochs // 2 + 1, DSA on every batch, loss mean(weight * CE)."""
    aug = partial(augment.dsa, strategy=strategy) if strategy else None
    loader = DeviceLoader(images, labels, weights=loss_weights, batch_size=batch_size, shuffle=True,
                          augment=aug, seed=seed)
    optimizer = training.build_optimizer(model.parameters(), lr, 0.9, 5e-4)
    for epoch in range(epochs + 1):
        training.train_epoch(model, loader, optimizer)
        if epoch == epochs // 2 + 1:
            lr *= 0.1
            optimizer = training.build_optimizer(model.parameters(), lr, 0.9, 5e-4)
    return model


def evaluate_synset(arch, info, images, labels, loss_weights, lr: float, val_loader, test_loader,
                    num_eval=5, epochs=1000, batch_size=256, strategy=None, seed=0, iteration=0) -> dict:
    """Mean and std of validation and test accuracy (percent) over num_eval fresh networks. A non-positive
    or non-finite learned lr cannot train a network: NaN accuracies."""
    if not (math.isfinite(lr) and lr > 0):
        nan = float("nan")
        return {"val_acc": nan, "val_std": nan, "test_acc": nan, "test_std": nan}
    val, test = [], []
    images, labels = images.detach(), labels.detach()
    for i in range(num_eval):
        s = eval_seed(seed, iteration, i)
        model = experts.build_expert(arch, info, s).to(images.device)
        train_on_synset(model, images, labels, loss_weights, lr, epochs, batch_size, strategy, s)
        val.append(training.evaluate(model, val_loader)["acc"])
        test.append(training.evaluate(model, test_loader)["acc"])
    std = lambda v: float(np.std(v)) if len(v) > 1 else 0.0
    return {"val_acc": float(np.mean(val)), "val_std": std(val), "test_acc": float(np.mean(test)),
            "test_std": std(test)}


# ---------------------------------------------------------------------------------------------------------
# Snapshots and figures

def snapshot(syn: SyntheticSet, space: TrainingSpace, info, **extra) -> dict:
    """The distilled.pt dict (DESIGN.md): pixel-space and training-space images, labels, raw weights,
    loss_weights, learned lr, dataset facts, the training space, plus extras (method, source, ...)."""
    images = syn.images.detach()
    return {"images": space.to_pixels(images).cpu(), "images_train_space": images.float().cpu().clone(),
            "labels": syn.labels.cpu().clone(), "weights": syn.weights.detach().cpu().clone(),
            "loss_weights": syn.loss_weights().cpu(), "lr": syn.lr_value, "dataset": info.name,
            "num_classes": info.num_classes, "in_channels": info.channels, "im_size": info.im_size,
            **space.record(), **extra}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_grid(path, images, labels, weights, num_classes, class_names=()):
    """One row per class, each image captioned with its weight. images: [N, C, H, W] in [0, 1].
    Returns (rows, columns) of the figure."""
    plt = _pyplot()
    labels = labels.cpu()
    per_class = [torch.nonzero(labels == c).flatten().tolist() for c in range(num_classes)]
    cols = max(1, max(len(p) for p in per_class))
    fig, axes = plt.subplots(num_classes, cols, figsize=(1.1 * cols + 0.6, 1.2 * num_classes), squeeze=False)
    for c, members in enumerate(per_class):
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(members):
                ax.axis("off")
                continue
            img = images[members[j]].cpu().permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
                      vmin=0, vmax=1)
            ax.set_title(f"w={float(weights[members[j]]):.2f}", fontsize=7, pad=2)
            if j == 0:
                ax.set_ylabel(class_names[c] if c < len(class_names) else str(c), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return num_classes, cols


def save_curves(path, history, evals):
    """Matching loss, learned lr, weight spread (std, min, max) and eval accuracy against iteration."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    its = [h["it"] for h in history]
    axes[0].plot(its, [h["loss"] for h in history], lw=0.8)
    axes[0].set_title("matching loss")
    axes[1].plot(its, [h["lr"] for h in history], lw=0.8)
    axes[1].set_title("learned lr (alpha)")
    for key in ("w_std", "w_min", "w_max"):
        axes[2].plot(its, [h[key] for h in history], lw=0.8, label=key)
    axes[2].set_title("weights")
    axes[2].legend(fontsize=7)
    for key in ("val_acc", "test_acc"):
        axes[3].plot([e["it"] for e in evals], [e[key] for e in evals], marker="o", ms=3, label=key)
    axes[3].set_title("eval accuracy (%)")
    axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def offline_seconds(path: str, d: dict):
    """What making the distilled set at `path` cost offline, in seconds, or None when unknown.

    condense.py records it in the file (metrics.offline_s / wall_s). distill.py's snapshot carries
    evaluation metrics only, so its cost is read from the runs' own results: results.json beside the
    distilled.pt (the distillation) plus every results*.json of the buffer folder it names as `source`
    (the experts). None when the distillation's results.json is missing (an unfinished run)."""
    metrics = d.get("metrics") or {}
    for key in ("offline_s", "wall_s"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])

    def wall(file):
        try:
            with open(file) as f:
                value = json.load(f).get("wall_s")
        except (OSError, ValueError):
            return None
        return float(value) if isinstance(value, (int, float)) else None

    total = wall(os.path.join(os.path.dirname(os.path.abspath(path)), "results.json"))
    if total is None:
        return None
    source = d.get("source")
    if isinstance(source, str) and os.path.isdir(source):
        total += sum(w for w in map(wall, sorted(glob.glob(os.path.join(source, "results*.json")))) if w)
    return total

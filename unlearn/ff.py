"""FF: Fisher forgetting ([S] unlearn/fisher.py::fisher_new, after Golatkar et al.'s "Eternal Sunshine").

1. Per-class diagonal Fisher on the retain set (eval mode, no augmentation, batches of 32 in dataset order):
       F = mean over batches of sum_y mean_b p(y | x_b) * (grad of mean_b CE(f(x_b), y))^2
   The released code makes K backward passes per batch (class_fisher_loop). On CUDA the K class losses of a
   batch are differentiated at once instead (class_fisher: torch.func.jacrev, vmapped over classes), the same
   quantity in one batched computation; on a CPU the loop is kept, measured 2x faster there (bench/ff_fisher.py,
   docs/results/cpu_benchmarks.md).
2. Per parameter tensor: var = alpha * clamp(1 / (F + 1e-8), max 1e3; max 1e2 for the output layer), averaged over
   dim 1 for tensors with more than one dimension (as released); mean = the original weights. For the output
   layer's rows of forgotten classes: mean 0 and var 1e-4. Then var x10 on the output layer, else x10 on 1-D
   tensors (BN). theta <- mean + sqrt(var) * N(0, I), seeded.
On a sparse model a pruned weight has zero gradient (Method.apply; the released code's torch-prune masks did the
same), hence zero Fisher and the clamped variance, which enters the dim-1 average of its kept neighbours.

The row zeroing applies to class-wise forgetting only (default). The released code (Unlearn-Sparse 80ba55d,
unlearn/fisher.py get_mean_var) fired it on the forget count alone, 4500 on CIFAR-10 / 450 on CIFAR-100, so its
random-10% runs zeroed row `class_to_replace` = -1, the last class, and its class-wise runs at any other count
(SVHN, other datasets) zeroed nothing: `--variant legacy` reproduces exactly that rule (on the number of forgotten
samples; the row is --class_to_replace, -1 = the last). The output layer is found as the model's last nn.Linear (the released code's test,
first dimension == num_classes, also catches any other such tensor).

Default alpha 3e-8 with no augmentation ([S-hist] run.py; the maintainer suggests about 1e-9 if TA collapses).
"""
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

import training
from unlearn.common import last_linear, plain_loader, register

FISHER_BATCH = 32  # the released Fisher loader's batch size


def class_fisher(model, loader, num_classes, masks=None):
    """name -> diagonal Fisher: mean over batches of sum_y mean_b p(y|x_b) * (grad mean_b CE(x_b, y))^2.
    `masks` (pruning): the functional call bypasses the gradient hooks of Method.apply, so it runs on
    weight * mask instead, which gives pruned coordinates the same zero gradient."""
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def class_losses(p, x, w):
        p = {n: training.masked(masks, n, t) for n, t in p.items()}
        logits = functional_call(model, (p, buffers), (x,)).float()
        log_p = F.log_softmax(logits, dim=1)                    # [B, K]
        losses = -(w[:, None] * log_p).mean(0)                   # [K]: mean_b CE(x_b, y) for every class y
        return losses, log_p.exp().mean(0).detach()             # aux: mean_b p(y | x_b), [K]

    jac = jacrev(class_losses, has_aux=True, chunk_size=min(num_classes, 16))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = 0
    for b in loader:
        w = torch.ones(len(b.y), device=b.x.device) if b.weight is None else b.weight
        grads, prob = jac(params, b.x, w)                        # grads[n]: [K, *shape]
        for n in fisher:
            fisher[n] += torch.tensordot(prob, grads[n].float() ** 2, dims=1)
        batches += 1
    return {n: f / max(batches, 1) for n, f in fisher.items()}


def class_fisher_loop(model, loader, num_classes):
    """The same Fisher the released way, K backward passes per batch: what class_fisher is checked against
    (tests) and timed against (bench/ff_fisher.py). Pruned coordinates: zero under Method.apply's hooks."""
    model.eval()
    named = list(model.named_parameters())
    fisher = {n: torch.zeros_like(p) for n, p in named}
    batches = 0
    for b in loader:
        w = torch.ones(len(b.y), device=b.x.device) if b.weight is None else b.weight
        log_p = F.log_softmax(model(b.x).float(), dim=1)
        prob = log_p.exp().mean(0).detach()
        for y in range(num_classes):
            grads = torch.autograd.grad(-(w * log_p[:, y]).mean(), [p for _, p in named], retain_graph=True)
            for (n, _), g in zip(named, grads):
                fisher[n] += prob[y] * g.float() ** 2
        batches += 1
    return {n: f / max(batches, 1) for n, f in fisher.items()}


RELEASED_ROW_RULE = {"cifar10": 4500, "cifar100": 450}  # dataset -> the forget count at which fisher_new zeroes a row


def forget_rows(ctx, cfg):
    """Output-layer rows to zero: the forgotten classes (class-wise forgetting only); legacy: the released rule,
    row --class_to_replace exactly when 4,500 CIFAR-10 / 450 CIFAR-100 samples are forgotten, whatever they are."""
    if cfg.variant != "legacy":
        return list(ctx.forget_classes or [])
    fires = RELEASED_ROW_RULE.get(getattr(cfg, "dataset", None)) == len(ctx.forget.indices)
    text = getattr(cfg, "class_to_replace", None)
    return [int(c) for c in str(text).split(",")] if fires and text is not None else []


@torch.no_grad()
def add_fisher_noise(model, fisher, alpha, rows, generator):
    _, _, head = last_linear(model)
    head_params = {id(p) for p in head.parameters()}
    for n, p in model.named_parameters():
        is_head = id(p) in head_params
        var = (1.0 / (fisher[n] + 1e-8)).clamp(max=1e2 if is_head else 1e3)
        var = alpha * var
        if p.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
        mu = p.detach().clone()
        if is_head and rows:
            mu[rows] = 0
            var[rows] = 1e-4
        if is_head or p.ndim == 1:
            var = var * 10
        noise = torch.randn(p.shape, device=p.device, generator=generator, dtype=p.dtype)
        p.copy_(mu + var.sqrt() * noise)


@register("FF", "fisher_new", defaults={"alpha": 3e-8}, variants=("default", "legacy"), iterative=False)
def fisher_forgetting(model, ctx, cfg):
    loader = plain_loader(ctx.retain, FISHER_BATCH)
    if ctx.device.type == "cuda":
        fisher = class_fisher(model, loader, ctx.num_classes, ctx.masks)
    else:
        fisher = class_fisher_loop(model, loader, ctx.num_classes)
    add_fisher_noise(model, fisher, cfg.alpha, forget_rows(ctx, cfg), ctx.generator(offset=3))
    training.apply_masks(model, ctx.masks)  # pruned weights stay exactly zero
    return model

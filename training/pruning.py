"""Unstructured pruning of convolution weights, as Unlearn-Sparse does it: masks are plain boolean tensors.

A mask dict maps a parameter name (e.g. `layer1.0.conv1.weight`) to a bool tensor of its shape, True = kept.
Only convolution weights are ever pruned (BatchNorm, biases and the classifier never are); the training
loop re-applies the masks after every optimizer step (`training.apply_masks`), so pruned weights stay
exactly zero under momentum and weight decay.

* `magnitude_masks`: global unstructured L1-magnitude pruning (torch.nn.utils.prune.global_unstructured
  with L1Unstructured). As with torch's pruning container, `rate` is the fraction of the *remaining*
  weights pruned: IMP at rate 0.2 leaves 0.8^j of the conv weights after j rounds.
* `random_masks`: the same count, chosen uniformly at random with a seeded generator (RandomUnstructured).
* `synflow_masks`: SynFlow (Tanaka et al. 2020) at initialisation, data-free: 100 rounds, each scoring
  |theta * dR/dtheta| with R = sum of the outputs for an all-ones input on the network with absolute-valued
  weights (eval mode), and keeping the top (1 - rate)^(k/100) of the conv weights after round k.
  The scoring runs on a float64 copy of the model, so the model itself (weights, BatchNorm statistics) is
  left exactly as it was.
"""
import copy

import torch
from torch import nn

from training.loop import apply_masks  # noqa: F401  (pruning's callers zero the pruned weights with it)
from utils import UsageError, load_checkpoint


def conv_weight_names(model) -> list:
    """Names of the weights of every convolution module (1-, 2- or 3-d), in module order."""
    return [f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd)]


def check_rate(rate, flag="--rate") -> float:
    if rate is None or not 0 < float(rate) < 1:
        raise UsageError(f"{flag}: the pruning rate must lie strictly between 0 and 1, got {rate}")
    return float(rate)


def _conv_params(model, purpose="pruning"):
    names = conv_weight_names(model)
    if not names:
        raise UsageError(f"{purpose}: the model has no convolution layers, and only convolution weights are "
                         "pruned (choose an architecture with convolutions)")
    params = dict(model.named_parameters())
    return {n: params[n] for n in names}


def full_masks(model) -> dict:
    """All-True masks over the conv weights (nothing pruned yet)."""
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in _conv_params(model).items()}


def _flat(tensors: dict) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors.values()])


def _unflat(flat: torch.Tensor, like: dict) -> dict:
    out, start = {}, 0
    for n, t in like.items():
        out[n] = flat[start:start + t.numel()].view_as(t).clone()
        start += t.numel()
    return out


def _keep_top(scores: dict, masks: dict, keep: int) -> dict:
    """New masks keeping the `keep` highest-scoring currently kept entries (one global ranking)."""
    flat_scores = _flat(scores).double()
    flat_mask = _flat(masks)
    flat_scores = torch.where(flat_mask, flat_scores, torch.full_like(flat_scores, -float("inf")))
    new = torch.zeros_like(flat_mask)
    if keep > 0:
        new[torch.topk(flat_scores, keep, sorted=False).indices] = True
    return _unflat(new & flat_mask, masks)


def _prune_lowest(model, rate, masks, score) -> dict:
    """Prune round(rate * remaining) of the kept conv weights, those with the lowest score(param) (torch's
    count for L1Unstructured and RandomUnstructured alike). `masks` are the current masks (None: dense);
    returns new masks (the old ones ANDed with the new cut), on the weights' device."""
    rate = check_rate(rate)
    params = _conv_params(model)
    masks = {n: (masks[n].to(p.device).bool() if masks and n in masks else torch.ones_like(p, dtype=torch.bool))
             for n, p in params.items()}
    remaining = int(sum(int(m.sum()) for m in masks.values()))
    keep = remaining - int(round(rate * remaining))
    return _keep_top({n: score(p) for n, p in params.items()}, masks, keep)


def magnitude_masks(model, rate, masks=None) -> dict:
    """Global L1-magnitude pruning of `rate` of the remaining conv weights: the smallest |w| go."""
    return _prune_lowest(model, rate, masks, lambda p: p.detach().abs())


def random_masks(model, rate, generator, masks=None) -> dict:
    """Global random pruning of `rate` of the remaining conv weights (torch's RandomUnstructured, as
    Unlearn-Sparse's pruning_model_random): the kept entries with the lowest uniform draws from the seeded
    `generator` (on the weights' device) go."""
    return _prune_lowest(model, rate, masks,
                         lambda p: torch.rand(p.shape, generator=generator, device=p.device))


def sparsity(model) -> float:
    """Percent of conv weights that are exactly zero (Unlearn-Sparse's check_sparsity, as sparsity)."""
    params = _conv_params(model, "sparsity")
    zeros = sum(int((p == 0).sum()) for p in params.values())
    return 100.0 * zeros / sum(p.numel() for p in params.values())


def mask_sparsity(masks) -> float:
    """Percent of entries the masks prune (0 for None or empty)."""
    if not masks:
        return 0.0
    total = sum(m.numel() for m in masks.values())
    return 100.0 * sum(int((~m.bool()).sum()) for m in masks.values()) / total


def layer_sparsity(model) -> dict:
    """Percent zeros per conv weight."""
    return {n: 100.0 * float((p == 0).float().mean()) for n, p in _conv_params(model, "sparsity").items()}


# ---------------------------------------------------------------------------------------------------------
# SynFlow

def _linearized_copy(model):
    """A float64 eval-mode copy with every floating parameter and buffer replaced by its absolute value."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _synflow_round(net, abs_weights, masks, input_shape):
    params = dict(net.named_parameters())
    with torch.no_grad():
        for n, w in abs_weights.items():
            params[n].copy_(w * masks[n])
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    net(x).sum().backward()
    return {n: (params[n].grad * params[n]).detach().abs() for n in abs_weights}


def synflow_scores(model, input_shape, masks=None) -> dict:
    """|theta * dR/dtheta| for every conv weight, R = sum(f_|theta|(ones)) in eval mode (float64).
    `input_shape` is (C, H, W); masked-out weights count as zero. The model is not modified."""
    params = _conv_params(model, "--prune synflow")
    net = _linearized_copy(model)
    own = dict(net.named_parameters())
    abs_weights = {n: own[n].detach().clone() for n in params}
    masks = masks or {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    masks = {n: m.to(own[n].device) for n, m in masks.items()}
    return _synflow_round(net, abs_weights, masks, input_shape)


def synflow_masks(model, rate, input_shape, iterations: int = 100, masks=None) -> dict:
    """Iterative SynFlow to a final conv sparsity of `rate` (of the weights kept by `masks`, default all).
    Round k (1..iterations) keeps the top round(n * (1 - rate)^(k / iterations)) scores, i.e. each round
    prunes 1 - (1 - rate)^(1/iterations) of the remaining weights. The model is not modified."""
    rate = check_rate(rate)
    if iterations < 1:
        raise UsageError(f"synflow iterations: must be at least 1, got {iterations}")
    params = _conv_params(model, "--prune synflow")
    net = _linearized_copy(model)
    own = dict(net.named_parameters())
    abs_weights = {n: own[n].detach().clone() for n in params}
    masks = {n: (masks[n].bool().to(own[n].device) if masks and n in masks
                 else torch.ones_like(own[n], dtype=torch.bool)) for n in params}
    start = int(sum(int(m.sum()) for m in masks.values()))
    for k in range(1, iterations + 1):
        scores = _synflow_round(net, abs_weights, masks, input_shape)
        keep = int(round(start * (1 - rate) ** (k / iterations)))
        masks = _keep_top(scores, masks, keep)
    device = next(model.parameters()).device
    return {n: m.to(device) for n, m in masks.items()}


def load_masks(path, model, arch, device):
    """The pruning masks of a model.pt (e.g. main_prune's state1/model.pt), checked against `model`."""
    record = load_checkpoint(path, map_location=device)
    masks = record.get("masks") if isinstance(record, dict) else None
    if not masks:
        raise UsageError(f"--mask: '{path}' holds no pruning masks (a dense model.pt?)")
    own = dict(model.named_parameters())
    if any(n not in own or own[n].shape != m.shape for n, m in masks.items()):
        raise UsageError(f"--mask: the masks in '{path}' (a {record.get('arch', '?')} model) do not fit --arch {arch}")
    return {n: m.bool().to(device) for n, m in masks.items()}

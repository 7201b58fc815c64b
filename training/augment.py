"""On-device augmentation, drawn from an explicit generator so the same seed gives the same batches.

crop_flip: torchvision's RandomCrop(size, padding=p) (zero fill) + RandomHorizontalFlip, per sample,
done as one gather on the batch tensor (any dtype: uint8 before conversion is cheapest).
dsa: MTT's differentiable Siamese augmentation (one of six groups per batch), for float images in any
space (normalised, ZCA-whitened, synthetic), differentiable w.r.t. the input.
"""
import math

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator = None) -> torch.Tensor:
    """x: [B, C, H, W]. Each sample gets its own offset in [0, 2p] per axis and a flip with p=0.5."""
    B, C, H, W = x.shape
    if padding <= 0:
        shift_y = shift_x = torch.zeros(B, dtype=torch.long, device=x.device)
    else:
        shift_y = torch.randint(0, 2 * padding + 1, (B,), device=x.device, generator=generator)
        shift_x = torch.randint(0, 2 * padding + 1, (B,), device=x.device, generator=generator)
    flip = torch.rand(B, device=x.device, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (padding,) * 4) if padding > 0 else x
    ar_h = torch.arange(H, device=x.device)
    ar_w = torch.arange(W, device=x.device)
    rows = shift_y[:, None] + ar_h                                        # [B, H]
    cols = shift_x[:, None] + torch.where(flip[:, None], W - 1 - ar_w, ar_w)  # [B, W], mirrored when flipped
    # gather rows then columns: [B, C, H, W+2p] -> [B, C, H, W]
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


# ---------------------------------------------------------------------------------------------------------
# DSA: differentiable Siamese augmentation exactly as MTT/TESLA use it (DC's ParamDiffAug, aug_mode 'S').
# Each call picks ONE group for the whole batch; the group's magnitudes are drawn per sample. Every draw
# comes from the caller's generator on x's device; every op is differentiable w.r.t. x (float input).

DSA_PARAMS = {
    "prob_flip": 0.5,         # flip: mirror horizontally with this probability
    "ratio_scale": 1.2,       # scale: sx, sy ~ U[1/1.2, 1.2], independently
    "ratio_rotate": 15.0,     # rotate: angle ~ U[-15, 15] degrees
    "ratio_crop_pad": 0.125,  # crop: integer shift up to round(0.125 * side) pixels per axis, zero fill
    "ratio_cutout": 0.5,      # cutout: zero one square of side round(0.5 * side)
    "brightness": 1.0,        # color: x + (u - 0.5) * 1.0
    "saturation": 2.0,        # color: (x - channel mean) * 2u + channel mean
    "contrast": 0.5,          # color: (x - image mean) * (u + 0.5) + image mean
}
DSA_GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def parse_strategy(strategy: str) -> tuple:
    """'color_crop_...' -> ('color', 'crop', ...); 'none' or '' -> () (no augmentation)."""
    if not strategy or strategy.lower() == "none":
        return ()
    groups = tuple(strategy.split("_"))
    unknown = [g for g in groups if g not in DSA_GROUPS]
    if unknown:
        raise ValueError(f"unknown DSA group '{unknown[0]}' in '{strategy}' (groups: {', '.join(DSA_GROUPS)}; "
                         "join them with _, or use none)")
    return groups


def _side(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)  # MTT rounds half up (Python's round() would send 2.5 to 2)


def color(x, brightness, saturation, contrast):
    """Per-sample [B] brightness offset, saturation factor and contrast factor, applied in that order."""
    per_sample = lambda t: t.to(x.dtype).view(-1, 1, 1, 1)
    x = x + per_sample(brightness)
    m = x.mean(1, keepdim=True)  # per-pixel mean over channels (a 1-channel image is left unchanged)
    x = (x - m) * per_sample(saturation) + m
    m = x.mean((1, 2, 3), keepdim=True)
    return (x - m) * per_sample(contrast) + m


def translate(x, dy, dx):
    """out[b, :, i, j] = x[b, :, i + dy[b], j + dx[b]], zero where that falls outside the image.

    Pad by one zero pixel and clamp the source index into the padding (MTT's trick): any shift works
    without knowing its size on the host."""
    B, C, H, W = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(H, device=x.device) + dy[:, None] + 1).clamp(0, H + 1)  # [B, H]
    cols = (torch.arange(W, device=x.device) + dx[:, None] + 1).clamp(0, W + 1)  # [B, W]
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2))
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def cutout(x, cy, cx, size):
    """Zero the (size_h x size_w) square whose rows start at cy - size_h // 2 (columns likewise), clipped to
    the image. Equals MTT's clamped scatter: a square never lies wholly outside, so clipping loses nothing."""
    B, C, H, W = x.shape
    sh, sw = size
    top, left = (cy - sh // 2)[:, None], (cx - sw // 2)[:, None]
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    in_rows = (rows >= top) & (rows < top + sh)     # [B, H]
    in_cols = (cols >= left) & (cols < left + sw)   # [B, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def flip(x, mask):
    """Mirror the samples where mask [B] is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def scale_theta(sx, sy):
    """Per-sample affine matrices [B, 2, 3] that scale x (width) by sx and y by sy."""
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)


def rotate_theta(angle):
    """Per-sample affine matrices [B, 2, 3] rotating by `angle` radians."""
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


def affine(x, theta):
    """Resample x through per-sample affine matrices: bilinear, zero padding, align_corners=True (MTT)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def dsa_group(x: torch.Tensor, group: str, generator: torch.Generator = None, params: dict = None):
    """Apply one DSA group to float x [B, C, H, W], magnitudes drawn per sample in MTT's order."""
    p = DSA_PARAMS if params is None else params
    B, _, H, W = x.shape
    uniform = lambda: torch.rand(B, device=x.device, generator=generator)
    if group == "color":
        b = (uniform() - 0.5) * p["brightness"]
        s = uniform() * p["saturation"]
        c = uniform() + p["contrast"]
        return color(x, b, s, c)
    if group == "crop":
        sh, sw = _side(H, p["ratio_crop_pad"]), _side(W, p["ratio_crop_pad"])
        dy = torch.randint(-sh, sh + 1, (B,), device=x.device, generator=generator)
        dx = torch.randint(-sw, sw + 1, (B,), device=x.device, generator=generator)
        return translate(x, dy, dx)
    if group == "cutout":
        sh, sw = _side(H, p["ratio_cutout"]), _side(W, p["ratio_cutout"])
        # centres in [0, H] for an even side, [0, H) for an odd one, as in MTT
        cy = torch.randint(0, H + 1 - sh % 2, (B,), device=x.device, generator=generator)
        cx = torch.randint(0, W + 1 - sw % 2, (B,), device=x.device, generator=generator)
        return cutout(x, cy, cx, (sh, sw))
    if group == "flip":
        return flip(x, uniform() < p["prob_flip"])
    if group == "scale":
        r = p["ratio_scale"]
        sx = uniform() * (r - 1.0 / r) + 1.0 / r
        sy = uniform() * (r - 1.0 / r) + 1.0 / r
        return affine(x, scale_theta(sx, sy))
    if group == "rotate":
        angle = (uniform() - 0.5) * 2 * p["ratio_rotate"] / 180 * math.pi
        return affine(x, rotate_theta(angle))
    raise ValueError(f"unknown DSA group '{group}' (groups: {', '.join(DSA_GROUPS)})")


def dsa(x: torch.Tensor, generator: torch.Generator = None, strategy: str = DSA_STRATEGY, params: dict = None):
    """MTT's DiffAugment in mode 'S': one group of `strategy`, drawn uniformly, for the whole batch.

    The group index is drawn on x's device and read back with one .item() per call: on a GPU that is one
    host sync per batch (it keeps the CPU from queueing far ahead; small next to a ConvNet step, but it
    rules out CUDA-graph capture). A caller that needs no sync can choose the group on the host itself
    and call dsa_group."""
    groups = parse_strategy(strategy)
    if not groups:
        return x
    pick = 0
    if len(groups) > 1:
        pick = torch.randint(len(groups), (1,), device=x.device, generator=generator).item()
    return dsa_group(x, groups[pick], generator, params)

"""DSA (augment.dsa): each group against its definition on hand-made images, gradients, determinism."""
import math

import pytest
import torch

from training import augment


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ramp(B=8, C=3, H=32, W=32):
    """Distinct positive pixel values, so every shift, mirror and zeroed pixel is visible."""
    return torch.arange(1, B * C * H * W + 1, dtype=torch.float32).reshape(B, C, H, W)


def shifted(x, dy, dx):
    """Reference: out[i, j] = x[i + dy, j + dx], zero outside, by plain slicing."""
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    out[..., max(0, -dy):min(H, H - dy), max(0, -dx):min(W, W - dx)] = \
        x[..., max(0, dy):min(H, H + dy), max(0, dx):min(W, W + dx)]
    return out


def test_translate_matches_slicing():
    x = ramp(B=3)
    dy, dx = torch.tensor([-4, 0, 3]), torch.tensor([2, -1, 4])
    out = augment.translate(x, dy, dx)
    for b in range(3):
        assert torch.equal(out[b], shifted(x[b], int(dy[b]), int(dx[b])))


@pytest.mark.parametrize("H,max_shift", [(32, 4), (8, 1)])
def test_crop_group_is_a_zero_filled_shift_within_range(H, max_shift):
    x = ramp(B=64, H=H, W=H)
    out = augment.dsa_group(x, "crop", gen())
    seen = set()
    for b in range(len(x)):
        shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)
                  if torch.equal(out[b], shifted(x[b], dy, dx))]
        assert len(shifts) == 1, f"sample {b} is no shift of at most {max_shift} pixels"
        seen.add(shifts[0])
    assert len(seen) > 5  # magnitudes are per sample


def test_cutout_zeroes_the_square():
    x = torch.ones(2, 3, 32, 32)
    out = augment.cutout(x, torch.tensor([16, 0]), torch.tensor([10, 31]), (16, 16))
    expected = torch.ones(2, 32, 32)
    expected[0, 8:24, 2:18] = 0   # interior: a full 16x16 square
    expected[1, 0:8, 23:32] = 0   # corner: the square clipped to the image
    assert torch.equal(out, expected[:, None].expand(2, 3, 32, 32))


@pytest.mark.parametrize("H,side", [(32, 16), (8, 4)])
def test_cutout_group_zeroes_one_clipped_square_per_sample(H, side):
    x = torch.ones(200, 3, H, H)
    out = augment.dsa_group(x, "cutout", gen())
    assert torch.equal(out[:, :1].expand_as(out), out)  # the same pixels in every channel
    full = 0
    for zero in out[:, 0] == 0:
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert zero.sum() == h * w and 0 < h <= side and 0 < w <= side  # one rectangle
        assert h == side or rows[0] == 0 or rows[-1] == H - 1  # shorter only where clipped by the border
        assert w == side or cols[0] == 0 or cols[-1] == H - 1
        full += h == w == side
    assert full > 0


def test_flip_mirrors_per_sample():
    x = ramp(B=200)
    out = augment.dsa_group(x, "flip", gen())
    mirrored = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert torch.all(mirrored ^ same)
    assert 60 < mirrored.sum() < 140  # p = 0.5, per sample


def test_identity_magnitudes():
    x = torch.randn(4, 3, 32, 32, generator=gen())
    ones, zeros = torch.ones(4), torch.zeros(4)
    assert torch.allclose(augment.affine(x, augment.scale_theta(ones, ones)), x, atol=1e-5)
    assert torch.allclose(augment.affine(x, augment.rotate_theta(zeros)), x, atol=1e-5)
    assert torch.allclose(augment.color(x, zeros, ones, ones), x, atol=1e-6)
    assert torch.equal(augment.translate(x, zeros.long(), zeros.long()), x)
    assert torch.equal(augment.flip(x, zeros.bool()), x)


def test_rotation_direction_and_color_definition():
    x = torch.randn(2, 3, 16, 16, generator=gen())
    quarter = augment.affine(x, augment.rotate_theta(torch.full((2,), math.pi / 2)))
    assert torch.allclose(quarter, torch.rot90(x, 1, (2, 3)), atol=1e-4)
    b, s, c = torch.tensor([0.2, -0.1]), torch.tensor([0.5, 1.5]), torch.tensor([0.7, 1.2])
    y = x + b.view(-1, 1, 1, 1)
    y = (y - y.mean(1, keepdim=True)) * s.view(-1, 1, 1, 1) + y.mean(1, keepdim=True)
    y = (y - y.mean((1, 2, 3), keepdim=True)) * c.view(-1, 1, 1, 1) + y.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(augment.color(x, b, s, c), y, atol=1e-6)


def test_scale_and_rotate_magnitudes_stay_in_range():
    # an affine map of a linear ramp is affine again: read the per-sample factor off the centre row
    B, W = 500, 33
    x = torch.linspace(-1, 1, W).expand(B, 1, W, W).contiguous()
    g = gen()
    r = augment.DSA_PARAMS["ratio_scale"]
    mid = augment.dsa_group(x, "scale", g)[:, 0, W // 2, W // 2 + 1] / x[0, 0, 0, W // 2 + 1]
    assert mid.min() >= 1 / r - 1e-4 and mid.max() <= r + 1e-4 and mid.max() - mid.min() > 0.3
    rotated = augment.dsa_group(x, "rotate", g)
    assert rotated.shape == x.shape and not torch.allclose(rotated, x)


@pytest.mark.parametrize("group", augment.DSA_GROUPS)
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (6, 1, 8, 8)])
def test_gradients_reach_the_input(group, shape):
    x = torch.randn(*shape, generator=gen(), requires_grad=True)
    weights = torch.randn(*shape, generator=gen(1))
    (augment.dsa_group(x, group, gen(2)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_same_seed_same_augmentation():
    x = torch.randn(16, 3, 32, 32, generator=gen())
    runs = [[augment.dsa(x, g) for _ in range(12)] for g in (gen(5), gen(5))]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    other = [augment.dsa(x, gen(6)) for _ in range(12)]
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_one_group_per_call_drawn_uniformly():
    x = torch.ones(4, 3, 8, 8)
    g = gen()
    counts = {}
    for _ in range(600):
        state = g.get_state()
        pick = int(torch.randint(6, (1,), generator=g))
        g.set_state(state)
        augment.dsa(x, g)
        counts[augment.DSA_GROUPS[pick]] = counts.get(augment.DSA_GROUPS[pick], 0) + 1
    assert set(counts) == set(augment.DSA_GROUPS) and min(counts.values()) > 60
    assert torch.equal(augment.dsa(x, g, "none"), x)
    assert torch.equal(augment.dsa(x.clone(), gen(1), "flip"), x)  # flip of a constant image
    with pytest.raises(ValueError, match="blur"):
        augment.dsa(x, g, "color_blur")

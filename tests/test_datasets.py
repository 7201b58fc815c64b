import numpy as np
import pytest
import torch

import datasets
from training import augment
from utils import UsageError, load_checkpoint, save_checkpoint

# ---------------------------------------------------------------------------------------------------------
# Splits

def _check_split(split, y, num_classes):
    train, val = split["train"], split["val"]
    for part in (train, val):
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.union1d(train, val), np.arange(len(y)))
    for c in range(num_classes):
        assert np.sum(y[val] == c) == int(0.1 * np.sum(y == c))


def test_split_cifar_sized():
    # shuffled labels, so the split cannot be right by taking every tenth position
    y = np.random.RandomState(0).permutation(np.repeat(np.arange(10), 5000))
    split = datasets.make_split(y, 10, split_seed=1)
    assert (len(split["train"]), len(split["val"])) == (45000, 5000)
    _check_split(split, y, 10)
    again = datasets.make_split(y, 10, split_seed=1)
    assert all(np.array_equal(split[k], again[k]) for k in ("train", "val"))
    other = datasets.make_split(y, 10, split_seed=2)
    assert not np.array_equal(split["val"], other["val"])


def test_split_digits(digits):
    y = digits.y_train_np
    split = datasets.make_split(y, 10, split_seed=1)
    _check_split(split, y, 10)
    assert np.array_equal(split["train"], digits.train_idx)
    assert np.array_equal(split["val"], digits.val_idx)


# ---------------------------------------------------------------------------------------------------------
# Forget sets

def _select(digits, cls=None, num=None, seed=0):
    return datasets.select_forget(digits.y_train_np, digits.train_idx, 10, cls, num, seed)


def test_forget_random(digits):
    idx, desc = _select(digits, num=50)
    assert desc == {"kind": "random", "classes": None, "n": 50}
    assert idx.dtype == np.int64 and len(idx) == 50
    assert np.all(np.diff(idx) > 0)
    assert np.all(np.isin(idx, digits.train_idx))
    # -1 means "no class restriction", as in the seeds
    assert np.array_equal(_select(digits, cls="-1", num=50)[0], idx)


def test_forget_class(digits):
    y, train = digits.y_train_np, digits.train_idx
    idx, desc = _select(digits, cls="3")
    assert desc == {"kind": "class", "classes": [3], "n": len(idx)}
    assert np.array_equal(idx, train[y[train] == 3])
    idx, desc = _select(digits, cls="5,3")
    assert desc["kind"] == "class" and desc["classes"] == [3, 5]
    assert np.array_equal(idx, train[np.isin(y[train], [3, 5])])


def test_forget_random_in_class(digits):
    idx, desc = _select(digits, cls="4", num=10)
    assert desc == {"kind": "random_in_class", "classes": [4], "n": 10}
    assert len(np.unique(idx)) == 10
    assert np.all(digits.y_train_np[idx] == 4)
    assert np.all(np.isin(idx, digits.train_idx))


def test_forget_none(digits):
    idx, desc = _select(digits)
    assert idx is None and desc["kind"] == "none" and desc["n"] == 0


def test_forget_seeded(digits):
    a, b, c = (_select(digits, num=50, seed=s)[0] for s in (7, 7, 8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_forget_save_load(digits, tmp_path):
    idx, _ = _select(digits, num=30)
    path = datasets.save_forget_indices(idx, str(tmp_path))
    loaded = datasets.load_forget_indices(path, digits.train_idx)
    assert loaded.dtype == np.int64 and np.array_equal(loaded, idx)
    # indices from the validation split mean the file belongs to another split: refuse it
    np.save(tmp_path / "bad.npy", np.concatenate([idx, digits.val_idx[:1]]))
    with pytest.raises(UsageError, match="--forget_indices"):
        datasets.load_forget_indices(str(tmp_path / "bad.npy"), digits.train_idx)


def test_forget_errors(digits):
    with pytest.raises(UsageError, match="--class_to_replace"):
        _select(digits, cls="10")
    with pytest.raises(UsageError, match="--num_indexes_to_replace"):
        _select(digits, num=len(digits.train_idx) + 1)


def test_get_info():
    with pytest.raises(UsageError, match="--dataset"):
        datasets.get_info("nope")
    info = datasets.get_info("CIFAR10")
    assert (info.name, info.num_classes, info.channels, info.im_size) == ("cifar10", 10, 3, 32)


# ---------------------------------------------------------------------------------------------------------
# Raw arrays

def test_load_arrays_npz(tmp_path):
    rng = np.random.RandomState(0)
    arrays = {"x_train": rng.randint(0, 256, (20, 32, 32, 3)).astype(np.uint8),
              "y_train": rng.randint(0, 10, 20).astype(np.int64),
              "x_test": rng.randint(0, 256, (10, 32, 32, 3)).astype(np.uint8),
              "y_test": rng.randint(0, 10, 10).astype(np.int64)}
    np.savez(tmp_path / "cifar10.npz", **arrays)
    loaded = datasets.load_arrays("cifar10", str(tmp_path))
    assert set(loaded) == set(arrays)
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)


def test_load_arrays_missing_offline(tmp_path, monkeypatch):
    def no_network(name, root):
        raise RuntimeError("no network")
    monkeypatch.setattr(datasets, "_torchvision", no_network)
    with pytest.raises(UsageError, match="--data_path") as e:
        datasets.load_arrays("cifar10", str(tmp_path))
    assert "no network" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no half-written cache


# ---------------------------------------------------------------------------------------------------------
# Loader

def test_loader_shuffle_seeded(digits):
    order = lambda seed: torch.cat([b.index for b in digits.loader("train", train=True, batch_size=64,
                                                                   seed=seed)])
    a, b, c = order(0), order(0), order(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, torch.as_tensor(digits.train_idx))  # actually shuffled


def test_loader_covers_each_index_once(digits):
    loader = digits.loader("train", train=True, batch_size=64, seed=0)
    for _ in range(2):  # every epoch, not only the first
        served = torch.cat([b.index for b in loader]).sort().values
        assert torch.equal(served, torch.as_tensor(digits.train_idx))


def test_loader_len(digits):
    n = len(digits.train_idx)
    assert n % 64 != 0  # otherwise drop_last would not matter
    full = digits.loader("train", train=True, batch_size=64)
    dropped = digits.loader("train", train=True, batch_size=64, drop_last=True)
    assert len(full) == -(-n // 64) == len(list(full))
    assert len(dropped) == n // 64 == len(list(dropped))
    assert all(len(b.index) == 64 for b in dropped)


def test_loader_eval_mode(digits):
    idx = digits.val_idx
    batches = list(digits.loader(idx, train=False, batch_size=50))
    x = torch.cat([b.x for b in batches])
    assert torch.equal(torch.cat([b.index for b in batches]), torch.as_tensor(idx))
    assert torch.equal(torch.cat([b.y for b in batches]), digits.y_train[idx])
    assert torch.equal(x, digits.x_train[idx].float() / 255)  # no augmentation, same order


def test_loader_test_set(digits):
    batches = list(digits.loader(digits.test_indices(), test=True, batch_size=100))
    assert torch.equal(torch.cat([b.x for b in batches]), digits.x_test.float() / 255)
    assert torch.equal(torch.cat([b.y for b in batches]), digits.y_test)


def test_loader_weights_follow_samples(digits):
    idx = digits.train_idx
    loader = digits.loader(idx, train=True, batch_size=64, seed=3, weights=idx.astype(np.float32))
    for b in loader:
        assert torch.equal(b.weight, b.index.float())


def test_loader_float_range(digits):
    b = next(iter(digits.loader("train", train=True, batch_size=256)))
    assert digits.x_train.dtype == torch.uint8
    assert b.x.dtype == torch.float32 and b.x.shape == (256, 1, 8, 8)
    assert 0 <= b.x.min() and b.x.max() <= 1 and b.x.max() > 0.5


# ---------------------------------------------------------------------------------------------------------
# Augmentation

def _images(b=8, c=3, h=10, w=12, seed=0):
    # values 1..255: a zero in the output can only come from the padding
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (b, c, h, w), dtype=torch.uint8, generator=g)


def test_crop_flip_is_shift_or_mirrored_shift():
    x, p = _images(b=32), 4
    out = augment.crop_flip(x, p, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (p,) * 4)
    H, W = x.shape[2:]
    drawn = set()
    for i in range(len(x)):
        # torchvision: RandomCrop(padding=p) on the zero-padded image, then RandomHorizontalFlip
        matches = []
        for dy in range(2 * p + 1):
            for dx in range(2 * p + 1):
                crop = padded[i, :, dy:dy + H, dx:dx + W]
                matches += [(dy, dx, flip) for flip, c in ((0, crop), (1, crop.flip(-1)))
                            if torch.equal(out[i], c)]
        assert len(matches) == 1, f"sample {i}: {matches}"
        drawn |= set(matches)
    # offsets and flips really vary (an identity "augmentation" would pass the loop above)
    assert len({(dy, dx) for dy, dx, _ in drawn}) > 10 and {f for *_, f in drawn} == {0, 1}


def test_crop_flip_no_padding_is_identity_or_mirror():
    x = _images(b=64)
    out = augment.crop_flip(x, 0, generator=torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert same.any() and mirrored.any()  # both outcomes occur in 64 draws


def test_crop_flip_seeded():
    x = _images(b=64)
    run = lambda seed: augment.crop_flip(x, 4, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


# ---------------------------------------------------------------------------------------------------------
# ZCA

def test_zca_inverse():
    x = torch.rand(500, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    z = datasets.ZCA.fit(x)
    assert torch.allclose(z.inverse(z(x)), x, atol=1e-4)


def test_zca_whitens_correlated_data():
    g = torch.Generator().manual_seed(0)
    # covariance Q diag(s^2) Q^T with a random rotation Q: far from diagonal, eigenvalues 1..100 >> eps
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    s = torch.linspace(1, 10, 16, dtype=torch.float64)
    x = (torch.randn(2000, 16, generator=g, dtype=torch.float64) * s @ q.T + 3).float()
    cov_in = torch.cov(x.double().T)
    assert (cov_in - torch.diag(cov_in.diagonal())).abs().max() > 1  # really correlated
    z = datasets.ZCA.fit(x.view(-1, 1, 4, 4), eps=1e-6)
    white = z(x.view(-1, 1, 4, 4)).reshape(2000, 16).double()
    assert torch.allclose(white.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(torch.cov(white.T), torch.eye(16, dtype=torch.float64), atol=0.05)


def test_zca_state_round_trip(tmp_path):
    x = torch.rand(200, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    z = datasets.ZCA.fit(x)
    # the state must survive a weights-only checkpoint, since distilled.pt carries it
    save_checkpoint(z.state(), str(tmp_path / "zca.pt"))
    z2 = datasets.ZCA.from_state(load_checkpoint(str(tmp_path / "zca.pt")))
    assert z2.eps == z.eps
    assert torch.equal(z2(x), z(x))
    assert torch.equal(z2.inverse(z(x)), z.inverse(z(x)))


def test_zca_matches_kornia_definition():
    """kornia.enhance.ZCAWhitening(eps=0.1): per-feature mean, unbiased covariance U S U^T,
    T = U diag((S + eps)^-1/2) U^T, inverse U diag((S + eps)^1/2) U^T."""
    rng = np.random.RandomState(0)
    x = rng.rand(300, 48) @ (np.eye(48) + 0.3 * rng.rand(48, 48))  # correlated, not centred
    x = x / x.max()
    mean = x.mean(0)
    U, S, _ = np.linalg.svd((x - mean).T @ (x - mean) / (len(x) - 1))
    T = U @ np.diag((S + 0.1) ** -0.5) @ U.T
    T_inv = U @ np.diag((S + 0.1) ** 0.5) @ U.T
    xt = torch.tensor(x, dtype=torch.float32).view(300, 3, 4, 4)
    z = datasets.ZCA.fit(xt, eps=0.1)
    assert np.allclose(z.mean.numpy(), mean, atol=1e-6)
    assert np.allclose(z.transform.numpy(), T, atol=1e-5)
    assert np.allclose(z.inverse_transform.numpy(), T_inv, atol=1e-5)
    assert np.allclose(z(xt).reshape(300, -1).numpy(), (x - mean) @ T, atol=1e-4)

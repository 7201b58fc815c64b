"""Datasets: metadata, loading (torchvision or a compact .npz cache), splits, forget sets, ZCA, and the
device-resident loader every stage trains from.

Images are kept as uint8 [N, C, H, W] tensors on the device and converted to float [0, 1] one batch at a
time; normalisation lives inside the models. Index arrays (splits, forget sets) always refer to the
official train set, so they stay meaningful across runs, files and papers.
"""
import importlib.util
import os
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, Optional

import numpy as np
import torch

from training import augment
from utils import UsageError, save_numpy


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    im_size: int
    num_classes: int
    mean: tuple
    std: tuple
    crop_padding: int  # RandomCrop padding of the training augmentation; 0 = no crop
    train_aug: bool    # crop+flip during training (the seeds train SVHN without it)
    classes: tuple = ()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASETS = {
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           4, True, CIFAR10_CLASSES),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            4, True),
    "svhn": DatasetInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False,
                        tuple(str(d) for d in range(10))),
    "tinyimagenet": DatasetInfo("tinyimagenet", 3, 64, 200, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                4, True),
    # scikit-learn's bundled 8x8 digits, scaled to uint8: the offline set for the demo and the tests.
    # mean/std measured on its images (all 1,797, pixel scale [0,1]). Digits are not mirror-symmetric, so
    # like SVHN it trains without crop+flip (a flipped 2 is no 2).
    "digits": DatasetInfo("digits", 1, 8, 10, (0.3053,), (0.3759,), 1, False,
                          tuple(str(d) for d in range(10))),
}


def get_info(name: str) -> DatasetInfo:
    key = str(name).lower().replace("-", "")
    if key not in DATASETS:
        raise UsageError(f"--dataset: unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    return DATASETS[key]


# ---------------------------------------------------------------------------------------------------------
# Raw arrays: x_* uint8 [N, H, W, C], y_* int64 [N], official order

def _digits():
    # scikit-learn's bundled file read directly (what its load_digits parses: 64 pixel values 0..16, then the
    # label): importing sklearn costs ~3 s per process, more than a digits training run.
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if spec else ""
    if not os.path.isfile(path):
        raise UsageError("--dataset digits: needs scikit-learn installed (its digits.csv.gz is the data)")
    raw = np.loadtxt(path, delimiter=",")
    x = np.round(raw[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [1797, 8, 8, 1]
    y = raw[:, -1].astype(np.int64)
    # A fixed stratified 80/20 train/test split (independent of every run seed).
    rng = np.random.RandomState(0)
    test = np.concatenate([rng.permutation(np.where(y == c)[0])[: round(0.2 * (y == c).sum())]
                           for c in range(10)])
    is_test = np.zeros(len(y), bool)
    is_test[test] = True
    return {"x_train": x[~is_test], "y_train": y[~is_test], "x_test": x[is_test], "y_test": y[is_test]}


def _torchvision(name: str, root: str):
    import torchvision
    if name in ("cifar10", "cifar100"):
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        tr, te = cls(root, train=True, download=True), cls(root, train=False, download=True)
        return {"x_train": tr.data, "y_train": np.asarray(tr.targets), "x_test": te.data,
                "y_test": np.asarray(te.targets)}
    if name == "svhn":
        tr = torchvision.datasets.SVHN(root, split="train", download=True)
        te = torchvision.datasets.SVHN(root, split="test", download=True)
        return {"x_train": tr.data.transpose(0, 2, 3, 1), "y_train": tr.labels,
                "x_test": te.data.transpose(0, 2, 3, 1), "y_test": te.labels}
    if name == "tinyimagenet":
        return _tinyimagenet(root)
    raise AssertionError(name)


def _tinyimagenet(root: str):
    """ImageFolder layout: <root>/tiny-imagenet-200/train/<wnid>/...; the official val/ (with
    val_annotations.txt, or already sorted into class folders) serves as the test set."""
    from PIL import Image
    from torchvision.datasets import ImageFolder
    base = os.path.join(root, "tiny-imagenet-200")
    train = ImageFolder(os.path.join(base, "train"))
    load = lambda path: np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    x_train = np.stack([load(p) for p, _ in train.samples])
    y_train = np.array([t for _, t in train.samples])
    ann = os.path.join(base, "val", "val_annotations.txt")
    if os.path.isfile(ann):
        rows = [line.split("\t")[:2] for line in open(ann)]
        x_test = np.stack([load(os.path.join(base, "val", "images", f)) for f, _ in rows])
        y_test = np.array([train.class_to_idx[w] for _, w in rows])
    else:
        val = ImageFolder(os.path.join(base, "val"))
        x_test = np.stack([load(p) for p, _ in val.samples])
        y_test = np.array([train.class_to_idx[val.classes[t]] for _, t in val.samples])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_arrays(name: str, data_path: str) -> dict:
    """Read <data_path>/<name>.npz if present, else fetch through torchvision and write that cache."""
    info = get_info(name)
    if info.name == "digits":
        return _digits()
    cache = os.path.join(data_path, f"{info.name}.npz")
    if os.path.isfile(cache):
        with np.load(cache) as z:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
            if missing:
                raise UsageError(f"--data_path: {cache} lacks {sorted(missing)} (expected x_train, y_train, "
                                 "x_test, y_test)")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    else:
        try:
            arrays = _torchvision(info.name, data_path)
        except Exception as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            where = {"cifar10": "cifar-10-batches-py/ (or cifar10.npz)",
                     "cifar100": "cifar-100-python/ (or cifar100.npz)",
                     "svhn": "train_32x32.mat and test_32x32.mat (or svhn.npz)",
                     "tinyimagenet": "tiny-imagenet-200/ (or tinyimagenet.npz)"}[info.name]
            raise UsageError(f"--data_path: {info.name} is not in '{data_path}' and could not be downloaded "
                             f"({reason}); put {where} there")
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        arrays["y_train"] = arrays["y_train"].astype(np.int64)
        arrays["y_test"] = arrays["y_test"].astype(np.int64)
        tmp = cache + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    shape = (info.im_size, info.im_size, info.channels)
    if arrays["x_train"].shape[1:] != shape or arrays["x_train"].dtype != np.uint8:
        raise UsageError(f"--data_path: {cache} holds x_train {arrays['x_train'].shape} "
                         f"{arrays['x_train'].dtype}; {info.name} needs N x {shape} uint8")
    return arrays


# ---------------------------------------------------------------------------------------------------------
# Splits and forget sets (numpy index arrays into the official train set)

SPLITS = ("val10", "regun")


def make_split(y_train: np.ndarray, num_classes: int, split_seed: int, val_fraction: float = 0.1,
               scheme: str = "val10", heldout_fraction: float = 0.1) -> dict:
    """Index arrays {train, val, heldout} into the official train set (train = retain + forget).

    val10 (Unlearn-Sparse): per class (0, 1, ... in order) draw int(0.1 * n_class) validation images with one
    np.random.RandomState(split_seed); the rest is train; no held-out part. Matches the seeds' index draw, so
    split_seed=1 is the split their original models were trained on.
    regun (ReGUn): one label-agnostic shuffle (Python's random.Random(split_seed), as ReGUn's split code);
    the first 10% is the held-out set D_h, never trained on; 10% of the remainder is val; the rest is train.
    CIFAR-10: 5,000 held-out, 4,500 val, 40,500 train (forget 1% of the remainder = 450 images)."""
    if scheme == "val10":
        rng = np.random.RandomState(split_seed)
        val = [rng.choice(np.where(y_train == c)[0], int(val_fraction * (y_train == c).sum()), replace=False)
               for c in range(num_classes)]
        val = np.sort(np.concatenate(val)).astype(np.int64)
        train = np.setdiff1d(np.arange(len(y_train)), val).astype(np.int64)
        return {"train": train, "val": val, "heldout": np.zeros(0, np.int64)}
    if scheme == "regun":
        import random
        order = list(range(len(y_train)))
        random.Random(split_seed).shuffle(order)
        order = np.asarray(order, dtype=np.int64)
        n_heldout = int(heldout_fraction * len(order))
        n_val = int(val_fraction * (len(order) - n_heldout))
        return {"heldout": np.sort(order[:n_heldout]), "val": np.sort(order[n_heldout:n_heldout + n_val]),
                "train": np.sort(order[n_heldout + n_val:])}
    raise UsageError(f"--split: unknown split '{scheme}' (choose from {', '.join(SPLITS)})")


def parse_classes(text, num_classes: int):
    """'3' / '3,5' -> [3] / [3, 5]; None or '-1' -> None (no class restriction)."""
    if text is None or str(text).strip() == "-1":
        return None
    try:
        classes = sorted({int(c) for c in str(text).split(",")})
    except ValueError:
        raise UsageError(f"--class_to_replace: expected a class index or comma list, got '{text}'")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"--class_to_replace: class {bad[0]} is out of range (0..{num_classes - 1}, or -1 "
                         "for random forgetting)")
    return classes


def select_forget(y_train, train_idx, num_classes, class_text=None, num=None, seed=0):
    """Forget indices (sorted, official train indices) and a description {kind, classes, n}.

    classes only: every train-split sample of those classes; N only: N random train-split samples;
    both: N random samples of those classes. Neither: no forget set (None)."""
    classes = parse_classes(class_text, num_classes)
    if classes is None and num is None:
        return None, {"kind": "none", "classes": None, "n": 0}
    train_idx = np.asarray(train_idx)
    candidates = train_idx if classes is None else train_idx[np.isin(y_train[train_idx], classes)]
    if num is None:
        chosen, kind = candidates, "class"
    else:
        if not 0 < num <= len(candidates):
            pool = "the train split" if classes is None else f"class(es) {classes} of the train split"
            raise UsageError(f"--num_indexes_to_replace: {num} is not in 1..{len(candidates)} (the size of "
                             f"{pool})")
        chosen = np.random.default_rng(seed).choice(candidates, num, replace=False)
        kind = "random" if classes is None else "random_in_class"
    chosen = np.sort(chosen).astype(np.int64)
    return chosen, {"kind": kind, "classes": classes, "n": int(len(chosen))}


def load_forget_indices(path: str, train_idx: np.ndarray) -> np.ndarray:
    if not os.path.isfile(path):
        raise UsageError(f"--forget_indices: file '{path}' does not exist")
    try:
        idx = np.load(path, allow_pickle=False)
    except Exception:
        raise UsageError(f"--forget_indices: '{path}' is not a .npy array of indices")
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) == 0:
        raise UsageError(f"--forget_indices: '{path}' must hold a non-empty 1-D integer array")
    outside = np.setdiff1d(idx, train_idx)
    if len(outside):
        raise UsageError(f"--forget_indices: {len(outside)} indices (e.g. {outside[0]}) are not in this train "
                         "split (check --split_seed and --dataset)")
    return np.unique(idx).astype(np.int64)


def save_forget_indices(indices: np.ndarray, save_dir: str) -> str:
    path = os.path.join(save_dir, "forget_indices.npy")
    save_numpy(np.sort(np.asarray(indices, dtype=np.int64)), path)
    return path


# ---------------------------------------------------------------------------------------------------------
# The device-resident loader

class Batch(NamedTuple):
    x: torch.Tensor                 # float [B, C, H, W] in [0, 1] (or training space for whitened data)
    y: torch.Tensor                 # int64 [B]
    weight: Optional[torch.Tensor]  # float [B] per-sample loss weights, or None
    index: torch.Tensor             # int64 [B] positions in the source tensor (official indices for train)


class DeviceLoader:
    """Minibatches gathered from tensors that already live on the device: no DataLoader, no PIL.

    images: uint8 (converted to float/255 per batch) or float; indices: which rows to serve (None = all);
    weights: one per served row, travelling with it through shuffling. Shuffling and augmentation draw
    from one seeded generator on the device, so the same seed gives the same batches."""

    def __init__(self, images, labels, indices=None, weights=None, batch_size=256, shuffle=False,
                 augment=None, seed=0, drop_last=False, channels_last=False):
        device = images.device
        self.images, self.labels = images, labels
        self.indices = (torch.arange(len(labels), device=device) if indices is None
                        else torch.as_tensor(np.asarray(indices), dtype=torch.long, device=device))
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32,
                                                                      device=device)
        if self.weights is not None and len(self.weights) != len(self.indices):
            raise ValueError("one weight per served sample is required")
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last, self.channels_last = drop_last, channels_last
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self):
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.indices)
        order = (torch.randperm(n, device=self.indices.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.indices.device))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            sel = order[start:start + self.batch_size]
            idx = self.indices[sel]
            x = self.images.index_select(0, idx)  # same as images[idx], far faster on CPU
            if self.augment is not None:
                x = self.augment(x, generator=self.generator)
            yield Batch(self._present(x), self.labels.index_select(0, idx),
                        None if self.weights is None else self.weights[sel], idx)

    def _present(self, x):
        """Images as batches serve them: uint8 -> float in [0, 1], in the loader's memory format."""
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def images_at(self, rows):
        """The un-augmented images at source rows `rows` (a device tensor), presented as batches are."""
        return self._present(self.images.index_select(0, rows))


def train_augment(info: DatasetInfo):
    """The seeds' training augmentation for a dataset: crop+flip, or nothing (SVHN)."""
    return partial(augment.crop_flip, padding=info.crop_padding) if info.train_aug else None


@dataclass
class Data:
    """One dataset on one device: official train/test tensors plus the frozen train/val split."""
    info: DatasetInfo
    x_train: torch.Tensor   # uint8 [N, C, H, W]
    y_train: torch.Tensor   # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_idx: np.ndarray   # official indices of the train split (sorted)
    val_idx: np.ndarray     # official indices of the validation split (sorted)
    split_seed: int
    split_name: str = "val10"
    heldout_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # never trained on (regun)

    @property
    def y_train_np(self):
        return self.y_train.cpu().numpy()

    @property
    def split(self):
        return {"name": self.split_name, "seed": self.split_seed}

    def part(self, name: str) -> np.ndarray:
        """Official train indices of a named part: train (45k on CIFAR), val, heldout (regun split; empty
        otherwise), full (train + val, the images a model may train on; all of them for val10)."""
        parts = {"train": self.train_idx, "val": self.val_idx, "heldout": self.heldout_idx,
                 "full": np.setdiff1d(np.arange(len(self.y_train)), self.heldout_idx).astype(np.int64)}
        if name not in parts:
            raise UsageError(f"unknown data part '{name}' (choose from {', '.join(parts)})")
        return parts[name]

    def test_indices(self, exclude_classes=None) -> np.ndarray:
        y = self.y_test.cpu().numpy()
        keep = np.ones(len(y), bool) if not exclude_classes else ~np.isin(y, exclude_classes)
        return np.where(keep)[0].astype(np.int64)

    def loader(self, indices, train=False, batch_size=256, seed=0, weights=None, test=False, **kw):
        """A DeviceLoader over train-set indices (or a part name), or over the test set with test=True.
        train=True shuffles and applies the dataset's training augmentation (unless augment=... is given)."""
        if isinstance(indices, str):
            indices = self.part(indices)
        images, labels = (self.x_test, self.y_test) if test else (self.x_train, self.y_train)
        kw.setdefault("augment", train_augment(self.info) if train else None)
        return DeviceLoader(images, labels, indices, weights, batch_size, shuffle=train, seed=seed, **kw)


def load_data(dataset: str, data_path: str = "./data", device="cpu", split_seed: int = 1,
              split: str = "val10") -> Data:
    info = get_info(dataset)
    if split not in SPLITS:  # before loading anything: a typo should not cost a download
        raise UsageError(f"--split: unknown split '{split}' (choose from {', '.join(SPLITS)})")
    arrays = load_arrays(info.name, data_path)
    to_nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    parts = make_split(arrays["y_train"], info.num_classes, split_seed, scheme=split)
    return Data(info, to_nchw(arrays["x_train"]), torch.from_numpy(arrays["y_train"]).to(device),
                to_nchw(arrays["x_test"]), torch.from_numpy(arrays["y_test"]).to(device),
                parts["train"], parts["val"], split_seed, split, parts["heldout"])


# ---------------------------------------------------------------------------------------------------------
# ZCA whitening, as kornia's ZCAWhitening(eps=0.1, compute_inv=True) used by MTT

class ZCA:
    """x_white = (flat(x) - mean) @ T with T = U diag((S + eps)^-1/2) U^T, where U S U^T is the unbiased
    covariance of the flattened [0, 1] training images. The inverse maps back: x = x_white @ T_inv + mean."""

    def __init__(self, mean, transform, inverse, eps):
        self.mean, self.transform, self.inverse_transform, self.eps = mean, transform, inverse, eps

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = 0.1, chunk: int = 4096) -> "ZCA":
        """x: float [N, C, H, W] in [0, 1]. Statistics accumulate in float64, chunk by chunk."""
        flat = x.reshape(len(x), -1)
        mean = flat.double().mean(0)
        cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=x.device)
        for start in range(0, len(flat), chunk):
            c = flat[start:start + chunk].double() - mean
            cov += c.T @ c
        cov /= len(flat) - 1
        S, U = torch.linalg.eigh(cov)
        S = S.clamp_min(0)
        T = (U * (S + eps).rsqrt()) @ U.T
        T_inv = (U * (S + eps).sqrt()) @ U.T
        return cls(mean.float(), T.float(), T_inv.float(), eps)

    def __call__(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(len(x), -1)
        out = torch.cat([(flat[s:s + chunk].float() - self.mean) @ self.transform
                         for s in range(0, max(len(flat), 1), chunk)])
        return out.reshape(shape)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1) @ self.inverse_transform + self.mean).reshape(x.shape)

    def to(self, device) -> "ZCA":
        return ZCA(self.mean.to(device), self.transform.to(device), self.inverse_transform.to(device), self.eps)

    def state(self) -> dict:
        return {"mean": self.mean.cpu(), "transform": self.transform.cpu(),
                "inverse": self.inverse_transform.cpu(), "eps": float(self.eps)}

    @classmethod
    def from_state(cls, state: dict) -> "ZCA":
        return cls(state["mean"], state["transform"], state["inverse"], state["eps"])

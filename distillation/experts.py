"""Expert trajectory buffers (MTT's replay_buffer_<k>.pt): where they live, how an expert is built and
trained, and how a buffer file is read back and checked. Used by buffer.py (writes) and distill.py (reads).

A buffer folder `<buffer_path>/<DATASET>[_NO_ZCA]/<Model>/` holds replay_buffer_<k>.pt, file k holding
experts k*save_interval ... (k+1)*save_interval - 1 (global expert indices), and, for ZCA buffers, one shared
zca.pt that every file points to (the 3072x3072 transform and its inverse are 75 MB on CIFAR and 1.2 GB
on Tiny ImageNet: too big to repeat in every file). Each replay_buffer file is a dict (weights_only):
  trajectories    float32 [experts, epochs + 1, P]: flat parameters at init and after every epoch
  param_names, param_shapes   the flat layout (model.parameters() order, MTT's)
  expert_indices, seeds, data_seeds   int64 [experts]: global index, the seed that rebuilds the expert's
                  init (build_expert) and the seed of its shuffling and DSA draws
  train_loss, train_acc, test_acc   float32 [experts, epochs] (test_acc NaN where not evaluated)
  dataset, model, num_classes, in_channels, im_size
  zca             {"file": "zca.pt", "fingerprint": sha256 prefix} or None
  norm_mean, norm_std   the normalisation of the training space when not whitened, else None
  source_indices  int64: the official train indices the experts trained on
  forget_indices  int64 or None: what they were forbidden to see
  source_digest   sha256 prefix of source_indices (cheap equality check between files and shards)
  config          every flag of the run; train_seconds
The training space is what the network sees: ZCA-whitened [0, 1] pixels, or (x - mean) / std; the
ConvNet itself has no normalisation layer (mean=None), as in MTT.
"""
import glob
import hashlib
import math
import os
import re
import sys
from functools import partial

import numpy as np
import torch

import models
import training
from datasets import ZCA, DeviceLoader
from training import augment
from utils import Timer, UsageError, load_checkpoint, save_checkpoint

ZCA_FILE = "zca.pt"
ZCA_EPS = 0.1  # kornia ZCAWhitening(eps=0.1) as MTT uses it

# MTT's spellings, so paths read like MTT's (`buffers/CIFAR10/ConvNetD3`).
DATASET_DIRNAMES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN", "tinyimagenet": "Tiny",
                    "digits": "Digits"}

# MTT normalises CIFAR-10 and CIFAR-100 (sic) with these constants when not whitening; other datasets use
# their own statistics (datasets.DATASETS).
MTT_CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def canonical_model(arch: str) -> str:
    """Registry key; 'convnet' is the same network as 'convnetd3', so both share one folder and one name."""
    try:
        key = models.canonical_arch(arch)
    except UsageError:
        raise UsageError(f"--model: unknown model '{arch}' (choose from {', '.join(models.MODELS)})")
    return "convnetd3" if key == "convnet" else key


def model_dirname(arch: str) -> str:
    key = canonical_model(arch)
    m = re.fullmatch(r"convnetd(\d)", key)
    return f"ConvNetD{m.group(1)}" if m else key


def buffer_dir(buffer_path: str, dataset: str, arch: str, zca: bool) -> str:
    """`<buffer_path>/<DATASET>[_NO_ZCA]/<Model>`. Unlike MTT (which adds _NO_ZCA only on CIFAR), every
    unwhitened buffer gets the suffix, so a ZCA and a plain buffer can never share a folder."""
    name = DATASET_DIRNAMES[dataset] + ("" if zca else "_NO_ZCA")
    return os.path.join(buffer_path, name, model_dirname(arch))


def training_norm(info):
    """(mean, std) of the unwhitened training space."""
    return MTT_CIFAR_NORM if info.name in ("cifar10", "cifar100") else (info.mean, info.std)


def buffer_file(folder: str, k: int) -> str:
    return os.path.join(folder, f"replay_buffer_{k}.pt")


def buffer_files(folder: str) -> list:
    """[(k, path)] of the complete buffer files in a folder, by k (atomic writes: a file that exists is whole)."""
    found = []
    for path in glob.glob(os.path.join(folder, "replay_buffer_*.pt")):
        m = re.fullmatch(r"replay_buffer_(\d+)\.pt", os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def digest(array) -> str:
    """Short sha256 of an array's bytes: equal data <=> equal digest, for practical purposes."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Experts

def expert_seeds(seed: int, index: int):
    """(init seed, data seed) of expert `index` in a run seeded `seed`, independent of which job or shard
    trains it. Two streams, so the init and the shuffling/DSA draws are never the same random numbers."""
    init_seed, data_seed = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(init_seed), int(data_seed)


def build_expert(arch: str, info, seed: int) -> torch.nn.Module:
    """A freshly initialised network (CPU, no normalisation layer), the same for the same seed everywhere:
    init draws from the CPU generator, seeded here, without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.get_model(canonical_model(arch), info.num_classes, info.channels, info.im_size)


def warn_small_norm_maps(arch: str, info) -> None:
    """A ConvNet whose last instance norm sees a map of 2x2 or less normalises 4 values or fewer by their own
    spread: the gradients (and meta-gradients) become huge and erratic. ConvNetD3 on 8x8 digits is such a
    case (docs/results/distill_digits.md): warn, and name the depth that keeps the maps at 4x4 or more."""
    m = re.fullmatch(r"convnetd(\d)", canonical_model(arch))
    if not m:
        return
    depth = int(m.group(1))
    last_map = info.im_size // 2 ** (depth - 1)
    if last_map <= 2:
        ok = int(math.log2(max(info.im_size // 4, 1))) + 1  # the deepest with last maps of 4x4 or more
        print(f"warning: {model_dirname(arch)} on {info.im_size}x{info.im_size} images normalises {last_map}x{last_map} "
              f"maps in its last block, which makes trajectory matching erratic; use --model ConvNetD{ok}",
              file=sys.stderr)


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    """All parameters as one detached fp32 vector, in model.parameters() order (logical NCHW order, so
    channels_last storage does not change it)."""
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def param_layout(model: torch.nn.Module):
    names, shapes = zip(*[(n, list(p.shape)) for n, p in model.named_parameters()])
    return list(names), list(shapes)


def train_expert(model, loader, epochs: int, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 decay: bool = False, test_loader=None, eval_epochs=(), progress=None) -> dict:
    """MTT's expert loop: SGD, cross-entropy, one snapshot of the flat parameters at init and after every
    epoch; with `decay`, lr x0.1 and a fresh optimizer after epoch index epochs // 2 + 1 (as MTT).
    Test accuracy only after the (1-based) epochs in eval_epochs. Stays on the device: the only host syncs
    are the evaluations. Returns trajectory [epochs + 1, P] and per-epoch train_loss/train_acc/test_acc."""
    device = next(model.parameters()).device
    optimizer = training.build_optimizer(model.parameters(), lr, momentum, weight_decay)
    first = flat_params(model)
    trajectory = torch.empty(epochs + 1, first.numel(), device=device)
    trajectory[0] = first
    train_loss = torch.empty(epochs, device=device)
    train_acc = torch.empty(epochs, device=device)
    test_acc = torch.full((epochs,), math.nan)
    for e in range(epochs):
        stats = training.train_epoch(model, loader, optimizer)
        trajectory[e + 1] = flat_params(model)
        train_loss[e], train_acc[e] = stats["loss"], stats["acc"]
        if e + 1 in eval_epochs:
            test_acc[e] = training.evaluate(model, test_loader)["acc"]
        if decay and e == epochs // 2 + 1:
            lr *= 0.1
            optimizer = training.build_optimizer(model.parameters(), lr, momentum, weight_decay)
        if progress is not None:
            progress.update(1)
    return {"trajectory": trajectory, "train_loss": train_loss, "train_acc": train_acc, "test_acc": test_acc}


class ExpertTrainer:
    """Trains the experts of buffer files from buffer.py's flags, on train images already in the training
    space; train_file(members) returns one file's record (trajectories, per-epoch stats, seeds, layout)."""

    def __init__(self, args, info, x_train, y_train, test_loader):
        self.args, self.info = args, info
        self.x_train, self.y_train, self.test_loader = x_train, y_train, test_loader
        self.dsa = partial(augment.dsa, strategy=args.dsa_strategy) if args.dsa else None
        every = args.eval_every or args.train_epochs
        self.eval_epochs = set(range(every, args.train_epochs + 1, every)) | {args.train_epochs}

    def train_file(self, members, bar=None) -> dict:
        args, device = self.args, self.x_train.device
        runs, seeds = [], []
        with Timer(device) as t:
            for i in members:
                init_seed, data_seed = expert_seeds(args.seed, i)
                model = build_expert(args.model, self.info, init_seed).to(device)
                loader = DeviceLoader(self.x_train, self.y_train, batch_size=args.batch_train, shuffle=True,
                                      augment=self.dsa, seed=data_seed)
                run = train_expert(model, loader, args.train_epochs, args.lr_teacher, args.mom, args.l2, args.decay,
                                   self.test_loader, self.eval_epochs, progress=bar)
                runs.append({key: value.cpu() for key, value in run.items()})  # one sync per expert
                seeds.append((init_seed, data_seed))
                if bar is not None:
                    bar.set_postfix(expert=i, test_acc=f"{float(runs[-1]['test_acc'][-1]):.1f}%")
        stacked = {key: torch.stack([r[key] for r in runs]) for key in runs[0]}
        names, shapes = param_layout(model)
        return {"param_names": names, "param_shapes": shapes, "trajectories": stacked.pop("trajectory"), **stacked,
                "expert_indices": torch.tensor(members, dtype=torch.long),
                "seeds": torch.tensor([s for s, _ in seeds], dtype=torch.long),
                "data_seeds": torch.tensor([s for _, s in seeds], dtype=torch.long), "train_seconds": t.seconds}


def buffer_history(plan, written: dict, done: dict) -> list:
    """One record per expert of the planned files (k -> record, from this run or found complete)."""
    history = []
    for k, _ in plan:
        rec = written.get(k) or done[k]
        for j, i in enumerate(rec["expert_indices"].tolist()):
            test = {e + 1: float(a) for e, a in enumerate(rec["test_acc"][j].tolist()) if not math.isnan(a)}
            history.append({"expert": i, "file": k, "seed": int(rec["seeds"][j]), "test_acc": test,
                            "train_loss": float(rec["train_loss"][j, -1]), "train_acc": float(rec["train_acc"][j, -1]),
                            "trained_now": k in written})
    return history


# ---------------------------------------------------------------------------------------------------------
# The shared ZCA file

def zca_fingerprint(state: dict) -> str:
    return digest(torch.cat([state["mean"].flatten(), state["transform"].flatten(),
                             torch.tensor([state["eps"]], dtype=state["mean"].dtype)]))


def shared_zca(folder: str, images, dataset: str, source_digest: str):
    """The folder's zca.pt, fitted on `images` (float [N, C, H, W] in [0, 1], the training source) if it does
    not exist yet. Created exclusively (temp file + link), so shards starting together agree on one file:
    the loser uses the winner's. Returns (ZCA on images' device, pointer dict for the buffer files)."""
    path = os.path.join(folder, ZCA_FILE)
    if not os.path.isfile(path):
        state = {**ZCA.fit(images, eps=ZCA_EPS).state(), "dataset": dataset, "source_digest": source_digest}
        tmp = f"{path}.{os.getpid()}.tmp"
        save_checkpoint(state, tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another shard was first; use its file
        finally:
            os.remove(tmp)
    state = load_checkpoint(path)
    if state.get("dataset") != dataset or state.get("source_digest") != source_digest:
        raise UsageError(f"{path} was fitted for another dataset or training source (other forget flags?); "
                         "use another --buffer_path or --save_dir")
    pointer = {"file": ZCA_FILE, "fingerprint": zca_fingerprint(state)}
    return ZCA.from_state(state).to(images.device), pointer


def load_zca(buffer_path: str, record: dict):
    """The ZCA a buffer file was trained with (None for an unwhitened buffer), checked by fingerprint."""
    pointer = record.get("zca")
    if pointer is None:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(buffer_path)), pointer["file"])
    state = load_checkpoint(path)
    if zca_fingerprint(state) != pointer["fingerprint"]:
        raise UsageError(f"{path} is not the ZCA that {buffer_path} was trained with (fingerprint differs)")
    return ZCA.from_state(state)


# ---------------------------------------------------------------------------------------------------------
# Reading buffer files

BUFFER_KEYS = {"trajectories", "param_names", "param_shapes", "expert_indices", "seeds", "dataset", "model",
               "zca", "source_indices", "forget_indices", "source_digest", "config"}


def load_buffer(path: str, dataset: str = None, model: str = None, zca: bool = None, mmap: bool = True) -> dict:
    """Read one replay_buffer_<k>.pt (weights_only) and check it was made for this dataset, model and
    whitening, when given. mmap=True maps the tensors instead of reading them (cheap metadata reads;
    tensors are read on first touch)."""
    if not os.path.isfile(path):
        raise UsageError(f"buffer file '{path}' does not exist")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot load '{path}' safely (weights_only=True): {first[:200]}")
    if not isinstance(record, dict) or not BUFFER_KEYS <= set(record):
        missing = sorted(BUFFER_KEYS - set(record)) if isinstance(record, dict) else "everything"
        raise UsageError(f"'{path}' is not a mu-wdd replay buffer (lacks {missing}); MTT's own buffers (lists "
                         "of tensor lists) need converting")
    expected = {"dataset": dataset, "model": None if model is None else canonical_model(model)}
    for key, want in expected.items():
        if want is not None and record[key] != want:
            raise UsageError(f"'{path}' holds a {record[key]} buffer, not {want}")
    if zca is not None and (record["zca"] is not None) != bool(zca):
        made = "with" if record["zca"] is not None else "without"
        raise UsageError(f"'{path}' was made {made} ZCA; match --zca to it")
    return record

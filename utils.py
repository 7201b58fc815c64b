"""Shared plumbing: the error type, seeding, device choice, atomic files, safe loading, timers, shared flags.

Everything here is used by several entry scripts; nothing here knows about datasets, models or methods.
"""
import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


class UsageError(Exception):
    """Bad input from the user. The message names the flag and the allowed values; scripts exit 2 with it."""


def run_cli(main):
    """Run an entry script's main(); a UsageError becomes `error: <message>` on stderr and exit code 2."""
    try:
        main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted (rerun with the same flags to resume)", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


# ---------------------------------------------------------------------------------------------------------
# Randomness and devices

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch. Library code still takes explicit generators; this covers the rest
    (weight initialisation). `deterministic` also pins cuDNN's algorithm choice (slower)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def get_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda when present. Asking for cuda without one is a usage error, not a crash later."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: unknown device '{name}' (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device: cuda was requested but no CUDA GPU is available (use --device cpu)")
    return device


def sync(device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """`with Timer(device) as t: ...; t.seconds` — wall time, CUDA-synchronized at both ends."""

    def __init__(self, device="cpu"):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self._start
        return False


# ---------------------------------------------------------------------------------------------------------
# Files: atomic writes, safe loads

def _atomic_write(path: str, write) -> None:
    """Write through a temp file in the same folder, then rename: a crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    except OSError as e:
        raise UsageError(f"cannot write to '{folder}' ({e.strerror}); choose a writable --save_dir")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def plain(obj):
    """obj with numpy scalars and arrays turned into Python numbers and lists, recursively: numpy values
    (np.float64 passes isinstance(x, float)) would make a checkpoint refuse to load weights-only."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


def save_checkpoint(obj, path: str) -> None:
    """torch.save, atomically. Keep `obj` to tensors, dicts, lists, str and numbers so it loads weights-only."""
    obj = plain(obj)
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_json(obj, path: str) -> None:
    """Write JSON atomically (numpy and torch scalars are converted)."""
    def default(o):
        if isinstance(o, (np.generic, torch.Tensor)):
            return o.tolist() if getattr(o, "ndim", 0) else o.item()
        if isinstance(o, (set, tuple)):
            return list(o)
        return str(o)
    write_text(json.dumps(obj, indent=2, default=default, allow_nan=True) + "\n", path)


def write_text(text: str, path: str) -> None:
    """Write a text file atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_numpy(array, path: str) -> None:
    """np.save, atomically."""
    _atomic_write(path, lambda f: np.save(f, array))


def save_npz(path: str, **arrays) -> None:
    """np.savez, atomically."""
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str, map_location="cpu"):
    """torch.load with weights_only=True, always: a file holding arbitrary pickled objects is refused."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError for corrupt zips, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot load '{path}' safely (weights_only=True): {first[:200]}")


def state_dict_of(obj) -> dict:
    """Accept our model.pt, a `{'state_dict': ...}` / `{'model': ...}` wrapper, or a bare state dict."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError("the checkpoint holds no state dict (expected tensors by parameter name)")
    # DataParallel / torch.compile prefixes
    for prefix in ("module.", "_orig_mod."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_weights(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Strict load that reports every mismatch in one readable line instead of a traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def brief(keys):
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        parts = [f"{name}: {brief(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys]
        raise UsageError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


# ---------------------------------------------------------------------------------------------------------
# Run records

def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def run_record(script: str, args: argparse.Namespace, device) -> dict:
    """The common head of every results.json; the script adds split/forget/metrics/history and wall_s."""
    return {
        "script": script,
        "config": vars(args),
        "device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def prepare_save_dir(path: str, flag: str = "--save_dir") -> str:
    """Create the output folder and prove it is writable (as root, os.access says yes to everything)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{flag}: '{path}' is not a writable folder ({e.strerror})")
    return path


def default_save_dir(script: str, dataset: str, arch: str, what: str, seed: int) -> str:
    return os.path.join("runs", script, f"{dataset}-{arch}-{what}-seed{seed}")


# ---------------------------------------------------------------------------------------------------------
# Shared flags: every script spells the common ones the same way

def str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "y", "on"):
        return True
    if v in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True/False/1/0, got '{value}'")


def add_bool(parser, flag: str, default: bool, help: str) -> None:
    """A boolean flag usable bare (`--zca`) or with a value (`--zca True`, `--zca 0`)."""
    parser.add_argument(flag, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL",
                        help=help)  # the HelpFormatter appends the default


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one `error: ...` line and exit code 2 (no usage dump)."""

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag's help; the description (a script's docstring) keeps its layout."""


def make_parser(description: str) -> Parser:
    # allow_abbrev=False: a flag is spelled in full or refused; argparse's prefix matching would turn the seeds'
    # --mem into an ambiguity (--mem_scores, --mem_centre) and silently accept half-typed flags.
    return Parser(description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def add_common_args(parser) -> None:
    g = parser.add_argument_group("common")
    g.add_argument("--seed", type=int, default=1, help="seed for initialisation, shuffling and augmentation")
    g.add_argument("--save_dir", default=None, help="output folder (default runs/<script>/<run name>/)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data_args(parser, default_dataset: str = "cifar10") -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset,
                   help="cifar10, cifar100, svhn, tinyimagenet or digits (case-insensitive)")
    g.add_argument("--data_path", "--data", dest="data_path", default="./data",
                   help="folder holding (or receiving) the dataset and its <name>.npz cache")
    g.add_argument("--split_seed", type=int, default=1,
                   help="seed of the per-class 10%% validation split (1 = the split the seeds' models saw)")
    g.add_argument("--split", default="val10",
                   help="val10: per-class 10%% validation split (Unlearn-Sparse); regun: a held-out 10%% taken first "
                        "(never trained on; ReGUn and A_AMU draw unseen images from it), then 10%% val, the rest train")


def add_model_args(parser, default_arch: str = "resnet18") -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--arch", default=default_arch, help="model name, see models.MODELS")
    g.add_argument("--norm_mean", type=str, default=None,
                   help="override the dataset's normalisation mean, e.g. 0.4914,0.4822,0.4465")
    g.add_argument("--norm_std", type=str, default=None,
                   help="override the dataset's normalisation std, e.g. 0.2023,0.1994,0.2010 (the HF model's)")


class _GpuAction(argparse.Action):
    """--gpu N: --device cuda:N where CUDA is available (an absent GPU N is an error); no effect without CUDA."""

    def __call__(self, parser, namespace, value, option_string=None):
        namespace.gpu = value
        if not torch.cuda.is_available():
            return
        if not 0 <= value < torch.cuda.device_count():
            parser.error(f"--gpu: there is no GPU {value} here (0..{torch.cuda.device_count() - 1})")
        namespace.device = f"cuda:{value}"


def add_seed_args(parser):
    """The seeds' (Unlearn-Sparse, SalUn, RUM) general flags that do nothing here, so that their commands run as
    written; --help says what each maps to. Returns the group, for a script's own seed-only flags."""
    g = parser.add_argument_group("the seeds' flags (accepted so their commands run; docs/seed_commands.md)")
    g.add_argument("--workers", "--num_workers", dest="workers", type=int, default=None, metavar="N",
                   help="the seeds' DataLoader workers: no effect (the data lives on the device as tensors)")
    g.add_argument("--print_freq", type=int, default=None, metavar="N",
                   help="the seeds' log interval: no effect (a progress bar per epoch; --quiet for none)")
    g.add_argument("--gpu", type=int, action=_GpuAction, default=None, metavar="N",
                   help="= --device cuda:N (the later of the two wins); no effect on a machine without CUDA")
    return g


def add_forget_args(parser) -> None:
    g = parser.add_argument_group("forget set")
    g.add_argument("--class_to_replace", type=str, default=None,
                   help="class (or comma list) to forget; -1 with --num_indexes_to_replace = random samples")
    g.add_argument("--num_indexes_to_replace", type=int, default=None,
                   help="number of random train-split samples to forget (within the classes if given); the "
                        "group size with --forget_group / --es_group")
    g.add_argument("--forget_indices", default=None, help="reuse a saved forget_indices.npy")
    # Forget sets by difficulty (RUM); the selection lives in forget_sets/groups.py.
    g.add_argument("--forget_group", "--mem", dest="forget_group", default=None,
                   choices=("high", "mid", "low", "mix"),
                   help="the N train-split images of highest / closest-to-centre / lowest memorisation "
                        "(--mem_scores or --proxy_file), or mix: N/3 of each, disjoint (--mem: RUM's name)")
    g.add_argument("--mem_scores", default=None,
                   help="Feldman-Zhang memorisation scores: .npz with 'memorization' or 'tr_mem', one value per "
                        "official train image (estimate_mem.py writes one)")
    g.add_argument("--proxy_file", default=None,
                   help="memorisation proxies instead of scores: events.npz (main_train.py --record_events) or "
                        "proxies.npz (python -m forget_sets.memorization --compute)")
    g.add_argument("--proxy", default="confidence",
                   help="the proxy in --proxy_file: confidence, max_conf, entropy, bi_acc, ho_ret or curvature")
    g.add_argument("--mem_centre", type=float, default=None,
                   help="mid = the N closest to this value (default: 0.5 for scores, the median for proxies)")
    g.add_argument("--es_group", "--group_index", dest="es_group", type=int, default=None,
                   help="entanglement group K (0..14): the train split sorted by feature distance to its centroid "
                        "(original model, --mask) in 15 equal bins, nearest first; N random of it with "
                        "--num_indexes_to_replace; -1: N/3 of each of bins 3, 12, 14 (RUM's; --group_index: its name)")


def parse_floats(text, flag: str, n: int):
    """'a,b,c' -> tuple of n floats, or None."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UsageError(f"{flag}: expected {n} comma-separated numbers, got '{text}'")
    return values

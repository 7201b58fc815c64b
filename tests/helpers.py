"""What the test files share: running a repo script the way a user does, in a fresh process; a method's config."""
import contextlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # small tensors: one thread per process is fastest on the 2-core CI box


@contextlib.contextmanager
def torch_threads(n):
    """torch's intra-op threads set to `n` inside the block. The suite runs one thread per worker (run_tests.sh:
    two workers with two threads each oversubscribe two cores); results whose last bits depend on the thread
    count (the shared originals, a bit-equality between two computation paths) are made at a fixed count."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(script, *args, env=None):
    """`python script args` (`bash script args` for .sh, `python -m script args` for a module name such as
    "forget_sets.memorization") from the repo root, output captured; `env` is laid over this process's
    environment."""
    env = {**{k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"}, **(env or {})}  # never a job's
    if script.endswith(".sh"):
        cmd = ["bash", script, *args]
    elif script.endswith(".py"):
        cmd = [sys.executable, os.path.join(ROOT, script), *args]
    else:
        cmd = [sys.executable, "-m", script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)


def run_main(script, *args):
    """`python script args` for a failing command line, in this process: the entry script's main() under
    utils.run_cli (its `error:` line and exit code), with stdout and stderr captured. Returns what run()
    returns. For bad-input checks, which end before any work: they skip an interpreter start-up (seconds) each."""
    import contextlib
    import importlib
    import io

    from utils import run_cli
    module = importlib.import_module(script[:-3] if script.endswith(".py") else script)
    out, err, code = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    sys.argv = [script, *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_cli(module.main)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def cfg_for(name, **over):
    """An unlearning method's config as method_config builds it: its defaults plus the seeds' SGD, overridden by
    `over`."""
    import argparse

    import unlearn
    base = {"variant": "default", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "unlearn_lr": None,
            "unlearn_epochs": None}
    return argparse.Namespace(**{**base, **unlearn.get_method(name).defaults, **over})


def cpu_bf16_amp(monkeypatch):
    """Make --amp mean bf16 autocast on the CPU too (on the CPU it is a no-op), so that a test sees which
    computations an amp run autocasts: amp resolves to on, and training.autocast honours it."""
    import contextlib

    import torch

    import training
    from training import loop

    def autocast(device, amp):
        return torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    monkeypatch.setattr(training, "resolve_amp", lambda flag, device: True)
    for owner in (training, loop):  # the loop's own calls, and methods that call training.autocast
        monkeypatch.setattr(owner, "autocast", autocast)


def amp_changes_logits(model, x) -> bool:
    """Whether the model's logits for `x` under training.autocast with amp on differ from its fp32 ones: under
    cpu_bf16_amp they do (what proves that a comparison of amp and fp32 runs can fail); without it, on the
    CPU, they do not."""
    import torch

    import training
    model.eval()
    with torch.no_grad():
        with training.autocast(x.device, True):
            amp = model(x).float()
        return not torch.equal(amp, model(x))

"""What the test files share: running a repo script the way a user does, in a fresh process."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # small tensors: one thread per process is fastest on the 2-core CI box


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

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

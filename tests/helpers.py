"""What the test files share: running a repo script the way a user does, in a fresh process."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # small tensors: one thread per process is fastest on the 2-core CI box


def run(script, *args, env=None):
    """`python script args` (or `bash script args` for .sh) from the repo root, output captured; `env` is laid
    over this process's environment."""
    cmd = ["bash", script, *args] if script.endswith(".sh") else [sys.executable, os.path.join(ROOT, script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})

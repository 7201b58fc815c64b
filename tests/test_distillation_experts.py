"""distillation/experts.py through buffer.py end to end on digits: trajectories, initialisation, resuming, sharding, retain-only buffers,
bad inputs."""
import json
import os

import numpy as np
import pytest
import torch

import datasets
import models
from distillation import experts

from helpers import ONE_THREAD, run

FAST = ["--dataset", "digits", "--batch_train", "32", "--train_epochs", "3", "--save_interval", "1",
        "--device", "cpu", "--quiet"]


def run_buffer(*args, env=None):
    return run("buffer.py", *args, env={**ONE_THREAD, **(env or {})})


def load(folder, k):
    return torch.load(os.path.join(folder, f"replay_buffer_{k}.pt"), weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Two experts in two files, ZCA, made in one uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    out = run_buffer(*FAST, "--zca", "--num_experts", "2", "--buffer_path", str(root))
    assert out.returncode == 0, out.stderr
    return os.path.join(root, "Digits", "ConvNetD3")


def test_trajectories_start_at_the_init_and_the_loss_falls(reference, digits):
    assert sorted(os.listdir(reference)) == ["replay_buffer_0.pt", "replay_buffer_1.pt", "results.json", "zca.pt"]
    for k in (0, 1):
        r = load(reference, k)
        assert r["trajectories"].dtype == torch.float32 and r["trajectories"].shape[:2] == (1, 4)  # epochs + 1
        assert r["expert_indices"].tolist() == [k] and r["forget_indices"] is None
        torch.manual_seed(int(r["seeds"][0]))  # the documented recipe: seed, then build on the CPU
        model = models.get_model("convnetd3", 10, 1, 8)
        init = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert torch.equal(r["trajectories"][0, 0], init)
        assert r["param_names"] == [n for n, _ in model.named_parameters()]
        assert all((r["trajectories"][0, e + 1] != r["trajectories"][0, e]).any() for e in range(3))
        assert r["train_loss"][0, -1] < r["train_loss"][0, 0]
        assert torch.isnan(r["test_acc"][0, :2]).all() and r["test_acc"][0, -1] > 40  # chance is 10%
        assert np.array_equal(r["source_indices"].numpy(), digits.part("full"))  # MTT: all train images
    # the ZCA every file points to was fitted on the training images in [0, 1]
    zca = experts.load_zca(os.path.join(reference, "replay_buffer_0.pt"), load(reference, 0))
    assert torch.allclose(zca.mean, digits.x_train.float().div(255).flatten(1).mean(0), atol=1e-6)
    result = json.load(open(os.path.join(reference, "results.json")))
    assert [h["expert"] for h in result["history"]] == [0, 1] and result["metrics"]["TA"] > 40


def test_shards_and_resume_rebuild_the_uninterrupted_buffer(reference, tmp_path):
    folder = tmp_path / "Digits" / "ConvNetD3"
    # the second task of a job array trains only its own file
    out = run_buffer(*FAST, "--zca", "--num_experts", "1", "--buffer_path", str(tmp_path),
                     env={"SLURM_ARRAY_TASK_ID": "1"})
    assert out.returncode == 0, out.stderr
    assert sorted(p for p in os.listdir(folder) if p.startswith("replay")) == ["replay_buffer_1.pt"]
    assert (folder / "results_from1.json").exists()
    mtime = os.path.getmtime(folder / "replay_buffer_1.pt")
    (folder / ".tmp-xyzreplay_buffer_0.pt").write_bytes(b"half a file")  # what kill -9 mid-write leaves
    # a plain rerun for both experts skips the finished file and fills the gap
    out = run_buffer(*FAST, "--zca", "--num_experts", "2", "--buffer_path", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "1 files written, 1 already complete" in out.stdout
    assert os.path.getmtime(folder / "replay_buffer_1.pt") == mtime
    for k in (0, 1):
        a, b = load(reference, k), load(folder, k)
        for key in ("trajectories", "seeds", "data_seeds", "train_loss", "expert_indices"):
            assert torch.equal(a[key], b[key]), (k, key)
        assert a["zca"] == b["zca"]


def test_retain_only_buffer_never_sees_the_forget_set(tmp_path, digits):
    flags = [*FAST, "--zca", "--num_experts", "1", "--train_epochs", "1", "--buffer_path", str(tmp_path)]
    out = run_buffer(*flags, "--class_to_replace", "3", "--num_indexes_to_replace", "30", "--seed", "2")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "Digits" / "ConvNetD3"
    r = load(folder, 0)
    forget, _ = datasets.select_forget(digits.y_train_np, digits.train_idx, 10, "3", 30, seed=2)
    source = r["source_indices"].numpy()
    assert np.array_equal(r["forget_indices"].numpy(), forget)
    assert np.array_equal(np.load(folder / "forget_indices.npy"), forget)
    assert len(np.intersect1d(source, forget)) == 0
    assert np.array_equal(np.union1d(source, forget), digits.part("full"))
    # even the whitening was fitted without them
    zca = experts.load_zca(str(folder / "replay_buffer_0.pt"), r)
    retain_mean = digits.x_train[torch.from_numpy(source)].float().div(255).flatten(1).mean(0)
    assert torch.allclose(zca.mean, retain_mean, atol=1e-6)
    # the folder refuses a buffer trained on other data
    out = run_buffer(*flags, "--num_experts", "2", "--seed", "2")
    assert out.returncode == 2 and "training data" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args,flag", [
    (["--model", "nonet"], "--model"),
    (["--num_experts", "0"], "--num_experts"),
    (["--buffer_path", "FILE/sub"], "--buffer_path"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, args, flag):
    (tmp_path / "FILE").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args]
    out = run_buffer(*FAST, "--buffer_path", str(tmp_path / "buffers"), *args)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and flag in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1

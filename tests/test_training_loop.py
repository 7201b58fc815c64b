"""training/loop.py through main_train.py end to end on digits: accuracy, resume equivalence, model.pt metadata, bad inputs."""
import json
import os

import pytest
import torch

import models
import training
from utils import UsageError

from helpers import run, run_main

FAST = ["--dataset", "digits", "--batch_size", "32", "--lr", "0.05", "--scheduler", "cosine", "--quiet"]


def run_train(*args):
    return run("main_train.py", *args)


def check_reaches_90_percent(folder, epochs):
    result = json.load(open(os.path.join(folder, "results.json")))
    assert result["metrics"]["TA"] > 90, result["metrics"]
    assert len(result["history"]) == epochs
    assert os.path.getsize(os.path.join(folder, "curves.png")) > 0


@pytest.mark.slow
def test_resnet18_on_digits_reaches_90_percent(tmp_path):
    out = run_train(*FAST, "--arch", "resnet18", "--epochs", "2", "--save_dir", str(tmp_path))  # 95.8% measured
    assert out.returncode == 0, out.stderr
    check_reaches_90_percent(tmp_path, 2)


def test_convnet_on_digits_reaches_90_percent(digits_original):
    """The shared original (conftest: main_train.py's main, 8 epochs) is a full main_train run."""
    check_reaches_90_percent(os.path.dirname(digits_original), 8)


def test_resume_gives_the_same_weights(tmp_path):
    flags = [*FAST, "--arch", "convnet", "--epochs", "2"]
    assert run_train(*flags, "--save_dir", str(tmp_path / "a")).returncode == 0
    first = run_train(*flags, "--save_dir", str(tmp_path / "b"), "--stop_after", "1")
    assert first.returncode == 0 and not (tmp_path / "b" / "model.pt").exists()
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    assert run_train(*flags, "--save_dir", str(tmp_path / "b"), "--resume").returncode == 0
    a, _ = models.load_model(str(tmp_path / "a" / "model.pt"))
    b, _ = models.load_model(str(tmp_path / "b" / "model.pt"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_model_pt_round_trip_keeps_metadata(tmp_path):
    assert run_train(*FAST, "--arch", "convnet", "--epochs", "1", "--save_dir", str(tmp_path),
                     "--norm_std", "0.5").returncode == 0
    model, record = models.load_model(str(tmp_path / "model.pt"))
    assert record["arch"] == "convnet" and record["dataset"] == "digits"
    assert (record["num_classes"], record["in_channels"], record["im_size"]) == (10, 1, 8)
    assert record["norm_std"] == [0.5] and record["split"] == {"name": "val10", "seed": 1}
    assert record["train_on"] == "train" and record["epoch"] == 1 and "TA" in record["metrics"]
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor([0.5]))


@pytest.mark.parametrize("args,flag", [
    (["--arch", "nonet"], "--arch"),
    (["--epochs", "0"], "--epochs"),
    (["--dataset", "mnist"], "--dataset"),
    (["--resume"], "--resume"),
    (["--train_on", "half"], "--train_on"),
    (["--norm_std", "0.1,0.2"], "--norm_std"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, args, flag):
    out = run_main("main_train.py", *FAST, "--save_dir", str(tmp_path / "run"), *args)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and flag in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_unwritable_save_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    out = run_main("main_train.py", *FAST, "--save_dir", str(tmp_path / "file" / "run"))
    assert out.returncode == 2 and "--save_dir" in out.stderr and "Traceback" not in out.stderr


def test_missing_data_without_network(tmp_path):
    out = run_train("--dataset", "cifar10", "--data_path", str(tmp_path), "--epochs", "1", "--quiet",
                    "--save_dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "--data_path" in out.stderr and "Traceback" not in out.stderr


def test_a_last_pt_from_before_the_split_flag_still_resumes(tmp_path, digits):
    def fit(config, **kw):
        torch.manual_seed(0)
        model = models.get_model("convnet", 10, 1, 8, digits.info.mean, digits.info.std)
        opt = training.build_optimizer(model.parameters(), 0.05)
        loader = digits.loader("train", train=True, batch_size=256)
        return training.fit(model, opt, training.build_scheduler(opt, "constant", 2), loader,
                            digits.loader("val"), 2, str(tmp_path / "last.pt"), config, quiet=True, **kw)
    assert not fit({"dataset": "digits"}, stop_after=1)[3]  # written before `split` was a resume key
    history, _, epochs_run, done = fit({"dataset": "digits", "split": "val10"})
    assert done and epochs_run == 1 and len(history) == 2
    with pytest.raises(UsageError, match="--split"):
        fit({"dataset": "digits", "split": "regun"})

import argparse
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import utils
from utils import UsageError


class Opaque:
    """An arbitrary class: unpickling it would run code, so weights-only loading must refuse it."""


def test_checkpoint_round_trip(tmp_path):
    obj = {"state_dict": {"w": torch.randn(3, 4), "mask": torch.tensor([True, False])},
           "labels": [1, 2, 3], "arch": "resnet18", "epoch": 7, "lr": 0.01, "lr_learned": None,
           "split": {"name": "val10", "seed": 1}}
    path = str(tmp_path / "model.pt")
    utils.save_checkpoint(obj, path)
    back = utils.load_checkpoint(path)
    assert back.keys() == obj.keys()
    assert all(torch.equal(back["state_dict"][k], obj["state_dict"][k]) for k in obj["state_dict"])
    assert {k: v for k, v in back.items() if k != "state_dict"} == \
        {k: v for k, v in obj.items() if k != "state_dict"}
    assert os.listdir(tmp_path) == ["model.pt"]


def test_checkpoint_refuses_pickled_objects(tmp_path):
    path = str(tmp_path / "evil.pt")
    torch.save({"x": Opaque()}, path)
    with pytest.raises(UsageError, match="weights_only"):
        utils.load_checkpoint(path)


def test_checkpoint_missing(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        utils.load_checkpoint(str(tmp_path / "nope.pt"))


def test_failed_save_keeps_old_file(tmp_path):
    path = str(tmp_path / "last.pt")
    utils.save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception):
        utils.save_checkpoint({"epoch": 2, "f": lambda: 0}, path)  # lambdas cannot be pickled
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind
    assert utils.load_checkpoint(path) == {"epoch": 1}


def test_state_dict_of():
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    for wrapped in (sd, {"state_dict": sd, "epoch": 3}, {"model": sd},
                    {f"module.{k}": v for k, v in sd.items()},
                    {"state_dict": {f"module.{k}": v for k, v in sd.items()}}):
        assert utils.state_dict_of(wrapped).keys() == sd.keys()
    with pytest.raises(UsageError):
        utils.state_dict_of({"epoch": 3, "arch": "resnet18"})


def test_load_weights():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    utils.load_weights(model, sd)
    assert torch.equal(model[1].bias, torch.full((2,), 0.5))
    with pytest.raises(UsageError, match=r"missing: 1\.bias"):
        utils.load_weights(model, {k: v for k, v in sd.items() if k != "1.bias"})
    with pytest.raises(UsageError, match=r"shape mismatch: 0\.weight"):
        utils.load_weights(model, {**sd, "0.weight": torch.zeros(5, 3)})


def test_write_json(tmp_path):
    path = str(tmp_path / "results.json")
    utils.write_json({"old": True}, path)
    utils.write_json({"acc": np.float32(0.5), "n": torch.tensor(3), "v": torch.tensor([1.0, 2.0]),
                      "t": (1, 2), "s": "x", "nested": {"k": [np.int64(4)]}}, path)
    assert os.listdir(tmp_path) == ["results.json"]
    with open(path) as f:
        assert json.load(f) == {"acc": 0.5, "n": 3, "v": [1.0, 2.0], "t": [1, 2], "s": "x",
                                "nested": {"k": [4]}}


@pytest.mark.parametrize("text,value", [("True", True), ("False", False), ("1", True), ("0", False),
                                        ("yes", True), ("no", False), (True, True), (False, False)])
def test_str2bool(text, value):
    assert utils.str2bool(text) is value


@pytest.mark.parametrize("text", ["maybe", "2", "", "truee"])
def test_str2bool_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        utils.str2bool(text)


def test_add_bool():
    parser = utils.make_parser("t")
    utils.add_bool(parser, "--zca", False, "whiten")
    assert parser.parse_args([]).zca is False
    assert parser.parse_args(["--zca"]).zca is True
    assert parser.parse_args(["--zca", "0"]).zca is False


def test_parser_error_is_one_line(capsys):
    parser = utils.make_parser("t")
    parser.add_argument("--epochs", type=int, default=1)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--epochs", "ten"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "--epochs" in err


def test_run_cli_turns_usage_error_into_exit_2(capsys):
    def main():
        raise UsageError("--arch: unknown model 'x'")
    with pytest.raises(SystemExit) as e:
        utils.run_cli(main)
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: --arch: unknown model 'x'\n"


def test_checkpoints_with_numpy_values_still_load_weights_only(tmp_path):
    utils.save_checkpoint({"metrics": {"auc": np.float64(51.5), "rows": np.arange(3)}, "t": (np.int64(2),)},
                    str(tmp_path / "m.pt"))
    loaded = utils.load_checkpoint(str(tmp_path / "m.pt"))
    assert loaded == {"metrics": {"auc": 51.5, "rows": [0, 1, 2]}, "t": (2,)}
    assert type(loaded["metrics"]["auc"]) is float

"""scripts/import_checkpoint.py: foreign state dicts become model.pt, mismatches are refused in one line."""
import torch
import torchvision

import models

from helpers import run


def run_import(*args):
    return run("scripts.import_checkpoint", *args, "--no_eval")


def cifar_torchvision_resnet18():
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def test_unlearn_sparse_checkpoint_with_pruning_and_normalize(tmp_path):
    state = {f"module.{k}": v for k, v in cifar_torchvision_resnet18().state_dict().items()}
    state["module.normalize.mean"] = torch.tensor([0.5, 0.4, 0.3])
    state["module.normalize.std"] = torch.tensor([0.2, 0.2, 0.2])
    weight = state.pop("module.layer1.0.conv1.weight")
    mask = (torch.rand_like(weight) > 0.5).float()
    state["module.layer1.0.conv1.weight_orig"], state["module.layer1.0.conv1.weight_mask"] = weight, mask
    torch.save({"state_dict": state, "epoch": 181}, tmp_path / "ckpt.pth.tar")
    out = run_import(str(tmp_path / "ckpt.pth.tar"), "--arch", "resnet18", "--dataset", "cifar10",
                     "--out", str(tmp_path / "model.pt"))
    assert out.returncode == 0, out.stderr
    model, record = models.load_model(str(tmp_path / "model.pt"))
    assert record["norm_mean"] == [0.5, 0.4, 0.3] and record["train_on"] == "full"
    assert torch.equal(record["masks"]["layer1.0.conv1.weight"], mask.bool())
    assert torch.equal(model.layer1[0].conv1.weight, weight * mask)


def test_shape_mismatch_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "imagenet_stem.bin")
    out = run_import(str(tmp_path / "imagenet_stem.bin"), "--arch", "resnet18", "--dataset", "cifar10",
                     "--out", str(tmp_path / "model.pt"))
    assert out.returncode == 2 and "conv1.weight" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "model.pt").exists()


def test_arbitrary_pickle_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": object.__new__(torch.nn.ReLU)}, tmp_path / "evil.pt")
    out = run_import(str(tmp_path / "evil.pt"), "--arch", "resnet18", "--dataset", "cifar10",
                     "--out", str(tmp_path / "model.pt"))
    assert out.returncode == 2 and "weights_only" in out.stderr

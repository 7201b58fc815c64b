"""Pruning (training/pruning.py, prune_states.py, main_prune.py), unlearning under a mask, pruned-checkpoint
import, and the backdoor experiment (forget_sets/backdoor.py, main_backdoor.py), on digits and CPU."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import models
from datasets import get_info
from forget_sets import backdoor
from training import pruning
from utils import UsageError

from helpers import ONE_THREAD, amp_changes_logits, cfg_for, cpu_bf16_amp, run, run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--dataset", "digits", "--batch_size", "32", "--lr", "0.05", "--scheduler", "cosine", "--quiet"]


def conv_zeros(state, names):
    return sum(int((state[n] == 0).sum()) for n in names), sum(state[n].numel() for n in names)


@pytest.fixture(scope="module")
def omp(tmp_path_factory):
    """OMP (rate 0.95, 2 states, rewind to epoch 1) of a resnet20s (it has BatchNorm and a Linear head)."""
    out = tmp_path_factory.mktemp("omp")
    res = run("main_prune.py", *FAST, "--arch", "resnet20s", "--epochs", "2", "--prune", "omp",
              "--rewind_epoch", "1", "--save_dir", str(out))
    assert res.returncode == 0, res.stderr
    return out, res.stdout


# ---------------------------------------------------------------------------------------------------------
# OMP / IMP / SynFlow

def test_omp_prunes_95_percent_of_conv_weights_and_nothing_else(omp):
    out, stdout = omp
    lines = [line for line in stdout.splitlines() if line.startswith("state ") and "sparsity" in line]
    assert len(lines) == 2 and "val" in lines[0] and "test" in lines[0]
    _, dense = models.load_model(str(out / "state0" / "model.pt"))
    assert "masks" not in dense and dense["metrics"]["sparsity"] < 0.01
    model, record = models.load_model(str(out / "state1" / "model.pt"))
    names = pruning.conv_weight_names(model)
    state = model.state_dict()
    zeros, total = conv_zeros(state, names)
    assert abs(zeros - 0.95 * total) <= len(names), (zeros, total)
    assert abs(record["metrics"]["sparsity"] - 100 * zeros / total) < 1e-9
    assert set(record["masks"]) == set(names)
    for n in names:
        assert torch.equal(state[n] == 0, ~record["masks"][n])
    others = [k for k, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.Linear))]
    assert others
    for k in others:
        assert int((state[k + ".weight"] == 0).sum()) == 0, k
    assert record["prune"]["prune"] == "omp" and record["metrics"]["TA"] > 50
    assert record["recipe"]["epochs"] == 2


def test_imp_state_sparsity_resume_and_skip(tmp_path):
    flags = [*FAST, "--arch", "convnet", "--epochs", "2", "--prune", "imp", "--rate", "0.2", "--pruning_times", "3",
             "--rewind_epoch", "1", "--save_dir", str(tmp_path)]
    first = run("main_prune.py", *flags, "--stop_after", "3")  # state 0 done, state 1 interrupted after 1 epoch
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "state0" / "model.pt").exists() and not (tmp_path / "state1" / "model.pt").exists()
    assert torch.load(tmp_path / "state1" / "last.pt", weights_only=True)["epoch"] == 1
    stamp = os.path.getmtime(tmp_path / "state0" / "model.pt")
    second = run("main_prune.py", *flags)
    assert second.returncode == 0, second.stderr
    assert "skipped" in second.stdout and "resuming" in second.stdout
    assert os.path.getmtime(tmp_path / "state0" / "model.pt") == stamp
    for j in range(3):
        model, record = models.load_model(str(tmp_path / f"state{j}" / "model.pt"))
        names = pruning.conv_weight_names(model)
        zeros, total = conv_zeros(model.state_dict(), names)
        assert abs(zeros - (1 - 0.8 ** j) * total) <= len(names), (j, zeros, total)


def test_magnitude_masks_match_torch_global_unstructured():
    torch.manual_seed(0)
    ours = models.get_model("convnet", 10, 1, 8)
    theirs = models.get_model("convnet", 10, 1, 8)
    theirs.load_state_dict(ours.state_dict())
    convs = [(m, "weight") for m in theirs.modules() if isinstance(m, nn.Conv2d)]
    masks = None
    for rate in (0.5, 0.3):  # the second rate applies to the remaining weights, as torch's container does
        torch_prune.global_unstructured(convs, pruning_method=torch_prune.L1Unstructured, amount=rate)
        masks = pruning.magnitude_masks(ours, rate, masks)
    state = theirs.state_dict()
    for n, m in masks.items():
        assert torch.equal(m, state[n + "_mask"].bool()), n
    assert abs(pruning.mask_sparsity(masks) - 100 * (1 - 0.5 * 0.7)) < 0.01


def test_synflow_scores_equal_hand_computation():
    """conv(1->2, 2x2, no bias) -> BN(2) (eval) -> flatten -> linear(8->1): with all weights made positive,
    R = sum_c sum_pos |v_c,pos| * (g_c * (S_c - m_c) / sqrt(var_c + eps) + b_c) where S_c = sum_k |w_c,k|,
    so |w * dR/dw|_c,k = |w_c,k| * g_c / sqrt(var_c + eps) * sum_pos |v_c,pos|."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.7, -1.3]))
        net[1].bias.copy_(torch.tensor([0.2, -0.1]))
        net[1].running_mean.copy_(torch.tensor([0.05, -0.02]))
        net[1].running_var.copy_(torch.tensor([2.0, 0.5]))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = pruning.synflow_scores(net, (1, 3, 3))
    w = net[0].weight.detach().double().abs()                  # [2, 1, 2, 2]
    g = net[1].weight.detach().double().abs()
    var = net[1].running_var.double()
    v = net[3].weight.detach().double().abs().view(2, 4)       # channel-major flatten: 2 channels x 2x2 map
    expected = w * (g / torch.sqrt(var + net[1].eps) * v.sum(1)).view(2, 1, 1, 1)
    assert set(scores) == {"0.weight"}
    assert torch.allclose(scores["0.weight"], expected, rtol=1e-10, atol=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and net.training


def test_synflow_masks_reach_the_rate_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = models.get_model("resnet20s", 10, 1, 8, (0.3,), (0.4,))
    model.train()
    model(torch.rand(8, 1, 8, 8))  # non-trivial BatchNorm statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = pruning.synflow_masks(model, 0.9, (1, 8, 8))
    total = sum(m.numel() for m in masks.values())
    assert abs(pruning.mask_sparsity(masks) - 90) <= 100 / total
    assert set(masks) == set(pruning.conv_weight_names(model)) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_main_prune_synflow_runs(tmp_path):
    res = run("main_prune.py", *FAST, "--arch", "convnetd1", "--epochs", "1", "--prune", "synflow", "--rate", "0.8",
              "--save_dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    model, record = models.load_model(str(tmp_path / "state0" / "model.pt"))
    assert abs(record["metrics"]["sparsity"] - 80) < 0.1 and record["prune"]["prune"] == "synflow"  # 1,152 weights


# ---------------------------------------------------------------------------------------------------------
# Unlearning under a mask

@pytest.mark.parametrize("method,extra", [("FT", []), ("GA", ["--unlearn_lr", "0.01"]), ("SalUn", []),
                                          ("retrain", [])])
def test_pruned_weights_stay_zero_under_unlearning(omp, tmp_path, method, extra):
    src = str(omp[0] / "state1" / "model.pt")
    _, original = models.load_model(src)
    res = run("main_forget.py", "--mask", src, "--unlearn", method, "--class_to_replace", "-1",
              "--num_indexes_to_replace", "60", "--save_dir", str(tmp_path), "--quiet", "--mia_jobs", "1",
              "--batch_size", "64", "--save_model", "--unlearn_epochs", "1", *extra)
    assert res.returncode == 0, res.stderr
    model, record = models.load_model(str(tmp_path / "model.pt"))
    state = model.state_dict()
    for n, mask in original["masks"].items():
        assert int((state[n][~mask] != 0).sum()) == 0, (method, n)
    survivors = sum(int((state[n][mask] != 0).sum()) for n, mask in original["masks"].items())
    assert survivors > 0  # the survivors were trained, not wiped
    assert abs(pruning.sparsity(model) - original["metrics"]["sparsity"]) < 0.01


def test_ft_prune_bi_prunes_before_every_second_epoch_and_keeps_the_old_mask(omp, digits):
    import unlearn
    model, record = models.load_model(str(omp[0] / "state1" / "model.pt"))
    seen = []
    ctx = unlearn.Context(retain=digits.loader(digits.train_idx[:128], train=True, batch_size=64),
                          forget=digits.loader(digits.train_idx[128:160], train=True, batch_size=64),
                          num_classes=10, device=torch.device("cpu"), make_model=None, masks=dict(record["masks"]))
    real_epoch = ctx.train_epoch
    ctx.train_epoch = lambda *a, **k: (seen.append(pruning.mask_sparsity(ctx.masks)), real_epoch(*a, **k))[1]
    model = unlearn.get_method("FT_prune_bi").apply(model, ctx, cfg_for("FT_prune_bi", unlearn_epochs=4, rate=0.5))
    # 4 epochs: pruning before epochs 0 and 2, each 1 - 0.5^(1/2) of the survivors; 95% -> 97.5% in total
    assert pruning.mask_sparsity(record["masks"]) < seen[0] == seen[1] < seen[2] == seen[3]
    assert abs(pruning.mask_sparsity(ctx.masks) - 97.5) < 0.01 and abs(pruning.sparsity(model) - 97.5) < 0.01
    for n, mask in record["masks"].items():
        assert not torch.any(ctx.masks[n] & ~mask) and int((model.state_dict()[n][~ctx.masks[n]] != 0).sum()) == 0


def ft_prune_bi_dry(epochs, **over):
    """FT_prune_bi on a dense convnet with the fine-tuning stubbed out: (conv sparsity before each epoch's
    fine-tuning, final masks, model)."""
    import unlearn
    torch.manual_seed(0)
    model = models.get_model("convnet", 10, 1, 8)
    ctx = unlearn.Context(retain=None, forget=None, num_classes=10, device=torch.device("cpu"), make_model=None)
    seen = []
    ctx.train_epoch = lambda *a, **k: (seen.append(pruning.mask_sparsity(ctx.masks)), {"loss": torch.zeros(())})[1]
    model = unlearn.get_method("FT_prune_bi").apply(model, ctx, cfg_for("FT_prune_bi", unlearn_epochs=epochs, **over))
    return seen, ctx.masks, model


def test_ft_prune_bi_follows_the_released_schedule():
    from unlearn.ft_prune_bi import prune_epochs
    assert prune_epochs(10) == [0, 2, 4, 6, 8] and prune_epochs(5) == [1, 3] and prune_epochs(1) == []
    seen, masks, model = ft_prune_bi_dry(10)  # rate 0.95
    assert [e for e in range(10) if seen[e] > (seen[e - 1] if e else 0)] == [0, 2, 4, 6, 8]
    total = sum(m.numel() for m in masks.values())
    assert abs(pruning.mask_sparsity(masks) - 95) <= 100 * 3 / total  # five roundings of half a weight at most
    assert pruning.sparsity(model) == pruning.mask_sparsity(masks)
    with pytest.raises(UsageError, match="at least 2 epochs"):  # one epoch would never prune
        ft_prune_bi_dry(1)


def test_ft_prune_bi_random_prune_cuts_the_same_count_elsewhere_reproducibly():
    l1, rnd, again = (ft_prune_bi_dry(2, **over)[1] for over in ({}, {"random_prune": True}, {"random_prune": True}))
    kept = [sum(int(m.sum()) for m in masks.values()) for masks in (l1, rnd)]
    total = sum(m.numel() for m in l1.values())
    assert kept[0] == kept[1] == total - round(0.95 * total)  # 2 epochs: one pruning, of all of `rate`
    assert sum(int((rnd[n] & l1[n]).sum()) for n in l1) < kept[0] / 2  # random: ~5% of L1's survivors
    assert all(torch.equal(rnd[n], again[n]) for n in rnd)  # seeded


# ---------------------------------------------------------------------------------------------------------
# Import of torch's parametrized pruning format

def test_torch_pruned_checkpoint_imports_to_the_same_function(tmp_path):
    info = get_info("digits")
    torch.manual_seed(0)
    net = models.get_model("convnet", 10, 1, 8, info.mean, info.std).eval()
    convs = [(m, "weight") for m in net.modules() if isinstance(m, nn.Conv2d)]
    torch_prune.global_unstructured(convs, pruning_method=torch_prune.L1Unstructured, amount=0.6)
    state = net.state_dict()
    assert any(k.endswith("weight_orig") for k in state) and any(k.endswith("weight_mask") for k in state)
    torch.save({"state_dict": state}, tmp_path / "pruned.pth.tar")
    res = run("scripts.import_checkpoint", str(tmp_path / "pruned.pth.tar"), "--arch", "convnet", "--dataset",
              "digits", "--train_on", "train", "--out", str(tmp_path / "model.pt"), "--no_eval")
    assert res.returncode == 0, res.stderr
    model, record = models.load_model(str(tmp_path / "model.pt"))
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), net(x), atol=1e-6)
    for n in pruning.conv_weight_names(model):
        assert torch.equal(record["masks"][n], state[n + "_mask"].bool())
    assert abs(pruning.sparsity(model) - 60) < 0.01


# ---------------------------------------------------------------------------------------------------------
# Backdoor

def test_trigger_lands_where_specified():
    assert backdoor.trigger_geometry(32) == (4, 2) and backdoor.trigger_geometry(8) == (2, 1)
    x = torch.full((3, 3, 32, 32), 200, dtype=torch.uint8)
    out = backdoor.add_trigger(x, 4, 2, 0)
    patch = torch.zeros(32, 32, dtype=torch.bool)
    patch[26:30, 26:30] = True  # 4x4, its last row/column 2 pixels in from the bottom-right corner
    assert torch.all(out[:, :, patch] == 0) and torch.all(out[:, :, ~patch] == 200)
    assert torch.all(x == 200)  # a copy
    small = backdoor.add_trigger(torch.zeros(2, 1, 8, 8), 2, 1, 255)
    assert torch.equal(small[0, 0].nonzero(), torch.tensor([[5, 5], [5, 6], [6, 5], [6, 6]]))
    assert torch.all(small[:, :, 5:7, 5:7] == 1.0)


def test_poison_data_touches_only_the_chosen_samples(digits):
    idx = backdoor.poison_indices(digits.train_idx, 0.1, seed=0)
    assert len(idx) == round(0.1 * len(digits.train_idx)) and set(idx) <= set(digits.train_idx)
    poisoned = backdoor.poison_data(digits, idx, 3, 2, 1, 255)
    assert torch.all(poisoned.y_train[idx] == 3) and torch.all(poisoned.x_train[idx][:, :, 5:7, 5:7] == 255)
    others = torch.ones(len(digits.y_train), dtype=torch.bool)
    others[idx] = False
    assert torch.equal(poisoned.x_train[others], digits.x_train[others])
    assert torch.equal(poisoned.y_train[others], digits.y_train[others])
    assert torch.equal(poisoned.x_test, digits.x_test)


def test_attack_success_rates_on_a_hand_made_model():
    """Six 4x4 test images whose top-left pixel holds their label, target 0, a 1-pixel trigger in the corner.
    The model reads the label off the image, and the trigger turns labels 0 and 1 into the target: ours counts
    the non-target images (two 1s of 1, 1, 2, 3 -> 50%), the released count all six (two 0s and two 1s -> 4/6)."""
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = y.to(torch.uint8)
    test_set = SimpleNamespace(x_test=x, y_test=y)

    class LabelReader(nn.Module):
        def __init__(self, trigger_works):
            super().__init__()
            self.trigger_works, self.unused = trigger_works, nn.Parameter(torch.zeros(1))

        def forward(self, images):
            label = torch.round(images[:, 0, 0, 0] * 255).long()
            fooled = self.trigger_works & (images[:, 0, 3, 3] == 1) & (label < 2)
            return nn.functional.one_hot(torch.where(fooled, 0, label), 4).float()

    rates = lambda model: backdoor.attack_success_rates(model, test_set, 0, size=1, offset=0, value=255)
    assert rates(LabelReader(True)) == {"ASR": 50.0, "ASR_released": pytest.approx(400 / 6)}
    assert rates(LabelReader(False)) == {"ASR": 0.0, "ASR_released": pytest.approx(200 / 6)}  # the released floor


def test_sparse_backdoored_model_is_pruned_with_rewinding_and_attacked(tmp_path):
    """The released recipe at the smallest scale: OMP with rewinding on the poisoned data, then FT."""
    res = run("main_backdoor.py", *FAST, "--arch", "convnet", "--epochs", "4", "--target_class", "0", "--prune", "omp",
              "--rate", "0.95", "--rewind_epoch", "1", "--unlearn", "FT", "--unlearn_epochs", "1",
              "--save_dir", str(tmp_path), env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    result = json.load(open(tmp_path / "results.json"))
    m = result["metrics"]
    assert m["ASR_before"] > 80 and m["TA_before"] > 85, m
    assert m["ASR_released_before"] >= m["ASR_before"]  # the target's own triggered images count as hits too
    assert {"TA", "ASR", "ASR_released", "UA", "RA"} <= set(m) and result["unlearn"] == "FT"
    assert "ASR_released" in res.stdout.splitlines()[-1]
    assert result["forget"]["n"] == len(np.load(tmp_path / "forget_indices.npy"))
    assert result["backdoor"]["prune"] == "omp" and result["backdoor"]["rewind_epoch"] == 1
    # main_prune's states on the poisoned data: state 1 keeps the 5% largest weights of the dense state 0 (and
    # was rewound to rewind.pt); the unlearned model keeps the mask.
    dense, _ = models.load_model(str(tmp_path / "train" / "state0" / "model.pt"))
    _, sparse = models.load_model(str(tmp_path / "train" / "state1" / "model.pt"))
    expected = pruning.magnitude_masks(dense, 0.95)
    assert all(torch.equal(sparse["masks"][n], expected[n]) for n in expected)
    assert (tmp_path / "train" / "rewind.pt").is_file() and sparse["prune"]["target_class"] == 0
    assert abs(m["sparsity"] - 95) < 0.1


def test_dense_backdoor_measured_in_fp32_when_amp_is_on(tmp_path, monkeypatch):
    """A dense poisoned model trained (one epoch), then measured again by an amp run that reuses it: identical
    numbers, although bf16 autocast changes the model's logits (so the comparison could fail)."""
    flags = [*FAST, "--arch", "convnet", "--epochs", "1", "--batch_size", "128", "--unlearn", "none",
             "--save_dir", tmp_path]  # any weights do: only their two measurements are compared
    measured = {}
    for amp in (False, True):
        with monkeypatch.context() as mp:
            if amp:
                cpu_bf16_amp(mp)
            res = run_main("main_backdoor.py", *flags)
            assert res.returncode == 0 and ("trained earlier" in res.stdout) == amp, res.stderr
            metrics = json.load(open(tmp_path / "results.json"))["metrics"]
            measured[amp] = {k: v for k, v in metrics.items() if k != "RTE_s"}  # all but a timing
            changed = amp_changes_logits(models.load_model(str(tmp_path / "train" / "model.pt"))[0],
                                         torch.rand(64, 1, 8, 8))
        assert changed == amp  # the patched amp does autocast (and changes logits); without it nothing does
    assert measured[True] == measured[False]


# ---------------------------------------------------------------------------------------------------------
# Bad inputs

@pytest.mark.parametrize("args,flag", [
    (["--rate", "1.5"], "--rate"),
    (["--prune", "magic"], "--prune"),
])
def test_bad_prune_inputs_exit_2_with_one_line(tmp_path, args, flag):
    out = run_main("main_prune.py", *FAST, "--epochs", "2", "--save_dir", str(tmp_path / "run"), *args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and flag in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_synflow_on_a_model_without_convolutions_is_one_clear_line():
    for rate in (0, 1, -0.1):
        with pytest.raises(pruning.UsageError, match="--rate"):
            pruning.check_rate(rate)
    with pytest.raises(pruning.UsageError, match="no convolution"):
        pruning.synflow_masks(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 0.5, (1, 8, 8))
    code = ("import torch; from torch import nn; from training import pruning; from utils import run_cli; "
            "run_cli(lambda: pruning.synflow_masks(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 0.5, (1, 8, 8)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

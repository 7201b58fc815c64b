"""main_forget_distill.py and condense.py on digits: distilled data stands in for real data correctly."""
import json
import sys

import numpy as np
import pytest
import torch

import models
from unlearn.common import Context, get_method
from utils import UsageError

import helpers
from helpers import ONE_THREAD


def run(script, *args):
    return helpers.run(script, *args, env=ONE_THREAD)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_original):
    out = tmp_path_factory.mktemp("distilled")
    model = digits_original
    res = run("condense.py", "--method", "herding", "--ipc", "10", "--mask", model, "--save_dir", str(out / "herd"))
    assert res.returncode == 0, res.stderr
    return model, str(out / "herd" / "distilled.pt"), out


def forget(setup, tmp_path, method, *extra, distilled=None):
    model, herd, _ = setup
    res = run("main_forget_distill.py", "--mask", model, "--unlearn", method, "--distilled", distilled or herd,
              "--save_dir", str(tmp_path / method), "--quiet", "--mia_jobs", "1", "--batch_size", "32", *extra)
    assert res.returncode == 0, res.stderr
    return json.load(open(tmp_path / method / "results.json"))


def test_distilled_ft_forgets_the_class_and_keeps_the_rest(setup, tmp_path):
    base = forget(setup, tmp_path, "none", "--class_to_replace", "3")["metrics"]
    ft = forget(setup, tmp_path, "FT", "--class_to_replace", "3")
    m = ft["metrics"]
    # 90 herding images stand in for 1,167 real ones: the forgotten class goes, the others mostly stay
    assert m["UA"] > base["UA"] + 50 and m["TA_forgotten"] < 10, (base, m)
    assert m["RA"] > base["RA"] - 10 and m["TA"] > 85, (base, m)
    assert ft["config"]["retain_source"] == "distilled" and ft["config"]["distilled_n"] == 100
    assert m["prep_s"] >= 0 and m["offline_s"] is not None and "distilled_forget_acc" in m


def test_weights_matter_and_off_equals_all_ones(setup, tmp_path):
    _, herd, _ = setup
    d = torch.load(herd, weights_only=True)
    d["loss_weights"] = torch.linspace(0.1, 1.9, len(d["labels"]))
    torch.save(d, tmp_path / "weighted.pt")
    flags = ("--class_to_replace", "3", "--distill_aug", "none")
    on = forget(setup, tmp_path / "on", "FT", *flags, distilled=str(tmp_path / "weighted.pt"))["metrics"]
    off = forget(setup, tmp_path / "off", "FT", *flags, "--use_weights", "off",
                 distilled=str(tmp_path / "weighted.pt"))["metrics"]
    ones = forget(setup, tmp_path / "ones", "FT", *flags)["metrics"]   # the herding set: loss weights all 1
    assert (on["RA"], on["TA"]) != (off["RA"], off["TA"])
    assert (off["UA"], off["RA"], off["TA"], off["MIA"]) == (ones["UA"], ones["RA"], ones["TA"], ones["MIA"])


def test_freeze_bn_keeps_batchnorm_statistics(digits):
    torch.manual_seed(0)
    model = models.get_model("resnet20s", 10, 1, 8, digits.info.mean, digits.info.std)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    images, labels = digits.x_train[:40].float() / 255, digits.y_train[:40]
    from datasets import DeviceLoader
    loader = DeviceLoader(images, labels, batch_size=20, shuffle=True)
    ctx = Context(retain=loader, forget=loader, num_classes=10, device=torch.device("cpu"), make_model=None,
                  freeze_bn=True)
    import argparse
    cfg = argparse.Namespace(unlearn_lr=1e-3, unlearn_epochs=2, momentum=0.9, weight_decay=5e-4)
    get_method("GA").run(model, ctx, cfg)
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_random_forgetting_refuses_a_full_data_set(setup, tmp_path):
    model, herd, _ = setup
    res = run("main_forget_distill.py", "--mask", model, "--unlearn", "FT", "--distilled", herd, "--class_to_replace",
              "-1", "--num_indexes_to_replace", "100", "--save_dir", str(tmp_path / "x"))
    assert res.returncode == 2 and "saw all the training data" in res.stderr


@pytest.mark.parametrize("method", ["random", "herding"])
def test_subsets_for_a_forget_set_avoid_it(setup, tmp_path, method):
    model, _, _ = setup
    res = run("condense.py", "--method", method, "--ipc", "5", "--mask", model, "--class_to_replace", "-1",
              "--num_indexes_to_replace", "300", "--save_dir", str(tmp_path / method))
    assert res.returncode == 0, res.stderr
    d = torch.load(tmp_path / method / "distilled.pt", weights_only=True)
    assert len(d["source"]) == 50 and not np.isin(d["source"].numpy(), d["forget_indices"].numpy()).any()
    assert torch.bincount(d["labels"], minlength=10).tolist() == [5] * 10
    # and such a set is accepted for exactly that random forget set
    out = forget(setup, tmp_path / "use", "FT", "--class_to_replace", "-1", "--num_indexes_to_replace", "300",
                 distilled=str(tmp_path / method / "distilled.pt"))
    assert out["forget"]["n"] == 300


def test_bad_inputs(setup, tmp_path):
    model, herd, _ = setup
    d = torch.load(herd, weights_only=True)
    other = {**d, "dataset": "cifar10"}
    torch.save(other, tmp_path / "other.pt")
    no3 = {**d}
    keep = d["labels"] != 3
    no3.update(images=d["images"][keep], labels=d["labels"][keep], weights=d["weights"][keep],
               loss_weights=d["loss_weights"][keep])
    torch.save(no3, tmp_path / "no3.pt")
    res = run("main_forget_distill.py", "--mask", model, "--unlearn", "FT", "--distilled", str(tmp_path / "other.pt"),
              "--class_to_replace", "3", "--save_dir", str(tmp_path / "bad"))
    assert res.returncode == 2 and "--distilled" in res.stderr and "Traceback" not in res.stderr, res.stderr
    import main_forget_distill  # the rest in this process: the same UsageError, without a new interpreter
    for path, message in ((tmp_path / "missing.pt", "does not exist"), (tmp_path / "no3.pt", "no images in the")):
        argv = ["main_forget_distill.py", "--mask", model, "--unlearn", "FT", "--distilled", str(path),
                "--class_to_replace", "3", "--save_dir", str(tmp_path / "bad")]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", argv)
            with pytest.raises(UsageError, match=message):
                main_forget_distill.main()


def test_retrain_dsa_freeze_bn_run_on_distilled(setup, tmp_path):
    # retrain = a fresh model trained on the distilled retain set only; DSA and --freeze_bn pass through
    out = forget(setup, tmp_path, "retrain", "--class_to_replace", "3", "--unlearn_epochs", "2",
                 "--distill_aug", "dsa", "--freeze_bn")
    m = out["metrics"]
    assert m["TA_forgotten"] == 0 and len(out["history"]) == 2 and out["config"]["distill_aug"] == "dsa"


def test_offline_seconds_from_file_or_results(tmp_path):
    from distillation.matching import offline_seconds
    assert offline_seconds(str(tmp_path / "d.pt"), {"metrics": {"wall_s": 3.5}}) == 3.5
    buffer = tmp_path / "buffer"
    buffer.mkdir()
    (buffer / "results.json").write_text(json.dumps({"wall_s": 10.0}))
    (buffer / "results_from5.json").write_text(json.dumps({"wall_s": 2.0}))
    d = {"metrics": {"val_acc": 80.0}, "source": str(buffer)}
    assert offline_seconds(str(tmp_path / "d.pt"), d) is None          # distillation unfinished: unknown
    (tmp_path / "results.json").write_text(json.dumps({"wall_s": 5.0}))
    assert offline_seconds(str(tmp_path / "d.pt"), d) == 17.0

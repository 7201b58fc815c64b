"""evaluation/: accuracies and their splits, the SVC MIA (core on hand-made arrays, and end to end on digits
models), the modified-entropy formula, Avg.Gap against the SalUn FT row, and summaries over results.json."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import evaluation
import models
import training
from evaluation import summarize as summ
from evaluation.mia import confidence, correctness, entropy, mia_features, modified_entropy
from utils import UsageError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORGOTTEN = 3  # the class forgotten in the class-wise tests


class Constant(nn.Module):
    """Predicts one class for every input: every accuracy is then a known label frequency."""

    def __init__(self, cls, num_classes=10):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluation finds the device through the parameters
        self.cls, self.num_classes = cls, num_classes

    def forward(self, x):
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, self.cls] = 5.0
        return logits + self.anchor


def rows(probs_of_label, labels, num_classes=10):
    """Softmax rows with probability p on the label and the rest spread evenly over the other classes."""
    probs = np.repeat(((1 - probs_of_label) / (num_classes - 1))[:, None], num_classes, axis=1)
    probs[np.arange(len(labels)), labels] = probs_of_label
    return probs


# ---------------------------------------------------------------------------------------------------------
# Features and the MIA core on hand-made arrays

def test_modified_entropy_matches_its_formula():
    # Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = np.array([0, 1])
    expected = [-(0.3 * math.log(0.7)) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9),
                -(0.4 * math.log(0.6)) - 0.1 * math.log(0.9) - 0.3 * math.log(0.7)]
    assert modified_entropy(probs, labels) == pytest.approx(expected, rel=1e-12)
    # Per-row labels: each row alone gives the same value as in the batch (the published `[:, labels]` did not).
    for i in range(2):
        assert modified_entropy(probs[i:i + 1], labels[i:i + 1])[0] == pytest.approx(expected[i], rel=1e-12)
    # A confident correct prediction scores ~0, a confident wrong one scores high; p = 0 / 1 stay finite.
    extreme = modified_entropy(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), np.array([0, 0]))
    assert extreme[0] == pytest.approx(0.0, abs=1e-12) and extreme[1] > 50 and np.isfinite(extreme).all()


def test_simple_features_on_a_hand_made_vector():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.5, 0.0]])
    labels = np.array([0, 2, 1])
    assert correctness(probs, labels).tolist() == [1.0, 0.0, 0.0]  # row 3: argmax takes the first of a tie
    assert confidence(probs, labels).tolist() == [0.7, 0.3, 0.5]
    assert entropy(probs)[2] == pytest.approx(math.log(2))  # 0 log 0 = 0
    feats = mia_features(probs, labels)
    assert list(feats) == list(evaluation.FEATURES)
    assert {k: v.shape for k, v in feats.items()} == {"correctness": (3, 1), "confidence": (3, 1),
                                                      "entropy": (3, 1), "m_entropy": (3, 1), "prob": (3, 3)}


@pytest.fixture(scope="module")
def shadow():
    """Members: confident on their label (p_y in [0.95, 1]); non-members: p_y in [0.2, 0.8]."""
    rng = np.random.default_rng(0)
    n = 300
    y_in, y_out = rng.integers(0, 10, n), rng.integers(0, 10, n)
    return (rows(rng.uniform(0.95, 1.0, n), y_in), y_in, rows(rng.uniform(0.2, 0.8, n), y_out), y_out)


def test_mia_efficacy_is_the_fraction_of_targets_that_look_unseen(shadow):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 100)
    unseen = rows(rng.uniform(0.25, 0.75, 100), y)  # the model never trained on these
    seen = rows(rng.uniform(0.96, 0.99, 100), y)    # memorised like the members
    assert evaluation.svc_mia_efficacy(*shadow, unseen, y, jobs=1)["confidence"] == 100.0
    assert evaluation.svc_mia_efficacy(*shadow, seen, y, jobs=1)["confidence"] == 0.0
    mixed = np.concatenate([unseen[:30], seen[30:]])
    result = evaluation.svc_mia_efficacy(*shadow, mixed, y, jobs=1)
    assert result["confidence"] == pytest.approx(30.0)  # 100 x (30 of 100 predicted non-member)
    assert set(result) == set(evaluation.FEATURES)


def test_mia_parallel_equals_inline(shadow):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 80)
    target = rows(rng.uniform(0.2, 1.0, 80), y)
    inline = evaluation.svc_mia_efficacy(*shadow, target, y, jobs=1)
    assert evaluation.svc_mia_efficacy(*shadow, target, y, jobs=5) == inline
    assert 0 < inline["confidence"] < 100


# ---------------------------------------------------------------------------------------------------------
# evaluate_unlearning: accuracies on a model with known predictions

def test_accuracies_of_a_constant_model(digits):
    y, y_test = digits.y_train_np, digits.y_test.numpy()
    train = digits.train_idx
    forget = np.concatenate([train[y[train] == 0][:3], train[y[train] == 1][:1]])  # 3 of 4 predicted right
    retain = np.setdiff1d(train, forget)
    model = Constant(0)

    random = evaluation.evaluate_unlearning(model, digits, forget, retain, mia_jobs=1)
    assert random["forget_acc"] == pytest.approx(75.0) and random["UA"] == pytest.approx(25.0)
    assert random["RA"] == pytest.approx(100 * np.mean(y[retain] == 0))
    assert random["TA"] == pytest.approx(100 * np.mean(y_test == 0))
    assert random["val_acc"] == pytest.approx(100 * np.mean(y[digits.val_idx] == 0))
    assert "TA_forgotten" not in random
    assert random["MIA"] == random["mia"]["confidence"] and set(random["mia"]) == set(evaluation.FEATURES)
    assert random["eval_s"] > 0

    # Class-wise: class 0 leaves the test set for TA (never right now) and gets its own TA_forgotten.
    classwise = evaluation.evaluate_unlearning(model, digits, forget, retain, forget_classes=[0], mia_jobs=1)
    assert classwise["TA"] == 0.0 and classwise["TA_forgotten"] == 100.0
    assert classwise["UA"] == random["UA"] and classwise["RA"] == random["RA"]


def test_bad_forget_sets_are_usage_errors(digits):
    model = Constant(0)
    with pytest.raises(UsageError, match="forget set is empty"):
        evaluation.evaluate_unlearning(model, digits, [], digits.train_idx, mia_jobs=1)
    with pytest.raises(UsageError, match="no test samples"):
        evaluation.evaluate_unlearning(model, digits, digits.train_idx[:5], digits.train_idx[5:],
                                       forget_classes=list(range(10)), mia_jobs=1)


# ---------------------------------------------------------------------------------------------------------
# MIA end to end: a model that never saw a class vs one that trained on it

def train_convnet(digits, indices, epochs=8):
    """A one-block ConvNet, 8 epochs without augmentation: ~100% train accuracy, so it memorises."""
    torch.manual_seed(0)
    model = models.get_model("convnetd1", 10, 1, 8, digits.info.mean, digits.info.std)
    optimizer = training.build_optimizer(model.parameters(), lr=0.05)
    loader = digits.loader(indices, train=True, batch_size=64, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this tiny net gains nothing from more; on a busy box they stall each other
    try:
        for _ in range(epochs):
            training.train_epoch(model, loader, optimizer)
    finally:
        torch.set_num_threads(threads)
    return model


@pytest.fixture(scope="module")
def classwise(digits):
    train, y = digits.train_idx, digits.y_train_np
    forget = train[y[train] == FORGOTTEN]
    retain = np.setdiff1d(train, forget)
    return forget, retain, train_convnet(digits, retain), train_convnet(digits, train)


def test_mia_high_when_never_seen_and_low_when_trained_on(digits, classwise):
    forget, retain, never_saw, saw = classwise
    unseen = evaluation.evaluate_unlearning(never_saw, digits, forget, retain, forget_classes=[FORGOTTEN],
                                            mia_jobs=1)
    seen = evaluation.evaluate_unlearning(saw, digits, forget, retain, forget_classes=[FORGOTTEN], mia_jobs=2)
    assert unseen["MIA"] >= 90 and seen["MIA"] <= 30, (unseen, seen)
    assert unseen["UA"] >= 95 and unseen["TA_forgotten"] <= 5 and unseen["TA"] >= 85
    assert seen["UA"] <= 10 and seen["TA_forgotten"] >= 85
    assert unseen["UA"] == pytest.approx(100 - unseen["forget_acc"])


def test_fewer_retain_than_test_samples_uses_all_retain(digits, classwise):
    forget, retain, never_saw, _ = classwise
    small = retain[:50]  # the test set has ~320 samples: the shadow members are these 50
    result = evaluation.evaluate_unlearning(never_saw, digits, forget, small, forget_classes=[FORGOTTEN],
                                            mia_jobs=1)
    assert 0 <= result["MIA"] <= 100 and result["RA"] >= 80


# ---------------------------------------------------------------------------------------------------------
# Avg.Gap and the retrain reference

SALUN_RETRAIN = {"UA": 5.24, "RA": 100.00, "TA": 94.26, "MIA": 12.88}
SALUN_FT_GAPS = {"UA": 4.61, "RA": 0.12, "TA": 0.20, "MIA": 10.19}  # SalUn Table 1, 10% random, FT row


def test_avg_gap_reproduces_the_salun_ft_row():
    ft = {k: SALUN_RETRAIN[k] - SALUN_FT_GAPS[k] for k in SALUN_RETRAIN}  # FT is below retrain on all four
    assert evaluation.avg_gap(ft, SALUN_RETRAIN) == pytest.approx(3.78, abs=1e-9)
    above = {k: SALUN_RETRAIN[k] + SALUN_FT_GAPS[k] for k in SALUN_RETRAIN}  # |delta|: the sign does not count
    assert evaluation.avg_gap(above, SALUN_RETRAIN) == pytest.approx(3.78, abs=1e-9)
    assert evaluation.avg_gap(SALUN_RETRAIN, SALUN_RETRAIN) == 0.0
    with pytest.raises(UsageError, match="MIA"):
        evaluation.avg_gap({"UA": 1, "RA": 1, "TA": 1}, SALUN_RETRAIN)


def test_load_reference_metrics(tmp_path):
    good = tmp_path / "retrain.json"
    good.write_text(json.dumps({"script": "main_forget", "metrics": {**SALUN_RETRAIN, "RTE_s": 10.0}}))
    assert evaluation.load_reference_metrics(str(good))["MIA"] == 12.88
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    no_mia = tmp_path / "no_mia.json"
    no_mia.write_text(json.dumps({"metrics": {"UA": 1, "RA": 2, "TA": 3}}))
    for path in (tmp_path / "missing.json", broken, no_mia):
        with pytest.raises(UsageError, match="--retrain_result"):
            evaluation.load_reference_metrics(str(path))


# ---------------------------------------------------------------------------------------------------------
# summarize

def fake_run(folder, method, seed, **metrics):
    os.makedirs(folder, exist_ok=True)
    record = {"script": "main_forget", "config": {"unlearn": method, "dataset": "cifar10", "arch": "resnet18",
                                                  "seed": seed},
              "forget": {"kind": "random", "classes": None, "n": 4500}, "metrics": metrics}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)


@pytest.fixture
def runs(tmp_path):
    fake_run(tmp_path / "ft-1", "FT", 1, UA=4.0, RA=99.0, TA=93.0, MIA=3.0, RTE_s=100.0, avg_gap=2.0)
    fake_run(tmp_path / "ft-2", "FT", 2, UA=6.0, RA=99.5, TA=94.0, MIA=5.0, RTE_s=140.0, avg_gap=4.0)
    fake_run(tmp_path / "retrain-1", "retrain", 1, UA=5.0, RA=100.0, TA=94.0, MIA=13.0, RTE_s=2500.0)
    fake_run(tmp_path / "ga-1", "GA", 1, UA=1.0, RA=99.0, TA=93.0, MIA=2.0, RTE_s=8.0)  # no avg_gap recorded
    os.makedirs(tmp_path / "unfinished")  # no results.json: not a run yet
    return tmp_path


def test_summarize_mean_and_std_over_seeds(runs):
    rows = summ.summarize(str(runs))
    assert [r["method"] for r in rows] == ["retrain", "FT", "GA"]  # the baseline opens the table
    ft = rows[1]
    assert ft["n"] == 2 and ft["label"] == "cifar10 resnet18 random n=4500"
    assert ft["UA"] == pytest.approx((5.0, math.sqrt(2)))  # sample std (ddof=1) over the two seeds
    assert ft["RTE_s"] == pytest.approx((120.0, math.sqrt(800)))
    assert ft["avg_gap"] == pytest.approx((3.0, math.sqrt(2)))
    # GA recorded no avg_gap: it is measured against the retrain run of the same setting.
    assert rows[2]["avg_gap"] == pytest.approx(((4 + 1 + 1 + 11) / 4, 0.0))
    assert rows[0]["avg_gap"] is None
    table = summ.format_table(rows)
    assert "| FT | cifar10 resnet18 random n=4500 | 2 | 5.00 ± 1.41 |" in table


def test_summarize_cli_writes_table_and_chart(runs, tmp_path):
    out, plot = tmp_path / "t" / "table.md", tmp_path / "t" / "bars.png"
    done = subprocess.run([sys.executable, "-m", "evaluation.summarize", str(runs), "--out", str(out),
                           "--plot", str(plot)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "5.00 ± 1.41" in out.read_text() and "3 rows from 4 runs" in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summarize_released_vs_corrected(tmp_path):
    """A run with a released behaviour (--variant legacy, a released saliency mask) is its own row, and the
    table puts it beside the corrected run of the same method and setting; the published row still matches."""
    def run(name, config, **metrics):
        fake_run(tmp_path / name, "IU", 1, **metrics)
        path = tmp_path / name / "results.json"
        record = json.loads(path.read_text())
        record["config"].update(config)
        path.write_text(json.dumps(record))
    run("iu-released", {"variant": "legacy"}, UA=2.0, RA=98.0, TA=91.0, MIA=5.0, avg_gap=4.0)
    run("iu", {"variant": "default"}, UA=6.0, RA=99.0, TA=93.0, MIA=12.0, avg_gap=1.0)
    run("salun-rum", {"unlearn": "SalUn", "preset": "rum", "mask_variant": "rum"}, UA=1.0, RA=99.0, TA=92.0, MIA=3.0)
    rows = summ.summarize(str(tmp_path))
    assert [r["method"] for r in rows] == ["IU", "IU (released)", "SalUn@rum (released)"]
    versus = summ.format_released_vs_corrected(rows)
    assert versus.splitlines()[0].startswith("| method | setting | UA released | UA corrected | RA released")
    assert "| IU | cifar10 resnet18 random n=4500 | 2.00 | 6.00 | 98.00 | 99.00 | 91.00 | 93.00 | 5.00 | 12.00 " \
           "| 4.00 | 1.00 |" in versus
    assert "SalUn" not in versus  # no corrected SalUn@rum run to compare with
    table = summ.format_table(rows, summ.load_published("sparse_random10_dense"))
    assert table.count("| IU (published) |") == 1  # once, under the first IU row


def test_summarize_cli_without_results_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["summarize", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(summ.main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: no results.json")

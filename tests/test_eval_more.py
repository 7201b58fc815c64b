"""evaluation on arrays: ToW / ToW-MIA, threshold-attack metrics, JS divergence, GapAvg, RMIA on tiny models
trained here, t-intervals in summarize; and the run integration on digits: outputs.npz written and every metric
computed without running a model again, the reference cache (reused, rebuilt, resumed), --references checks."""
import glob
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

import evaluation
import main_forget
import main_train
import models
import training
from evaluation import summarize as summ
from evaluation.outputs import Outputs
from unlearn.common import METHODS
from utils import load_checkpoint, run_cli, save_checkpoint

from helpers import amp_changes_logits, cpu_bf16_amp


def outputs_of(parts: dict, forget_classes=()) -> Outputs:
    """Outputs from {part: (probs, labels)}: losses = -log p_y, indices = row numbers."""
    arrays = {}
    for part, (probs, labels) in parts.items():
        probs, labels = np.asarray(probs, np.float32), np.asarray(labels, np.int64)
        arrays[part] = {"probs": probs, "labels": labels, "indices": np.arange(len(labels)),
                        "losses": -np.log(probs[np.arange(len(labels)), labels])}
    return Outputs(arrays, {"dataset": "toy", "split": None, "forget_classes": list(forget_classes)})


# ---------------------------------------------------------------------------------------------------------
# Pure functions on hand-made numbers

def test_tow_is_one_against_itself_and_follows_the_formula():
    retrain = {"UA": 10.0, "RA": 99.0, "TA": 94.0, "MIA": 12.0}
    assert evaluation.tow(retrain, retrain) == 1.0 and evaluation.tow_mia(retrain, retrain) == 1.0
    # forget acc 70 vs 90 (gap 20), RA gap 2, TA gap 5, MIA gap 30 (percent; the formula takes a fraction)
    unlearned = {"UA": 30.0, "RA": 97.0, "TA": 89.0, "MIA": 42.0}
    assert evaluation.tow(unlearned, retrain) == pytest.approx(0.80 * 0.98 * 0.95, abs=1e-12)
    assert evaluation.tow_mia(unlearned, retrain) == pytest.approx(0.70 * 0.98 * 0.95, abs=1e-12)
    assert evaluation.tow(retrain, unlearned) == evaluation.tow(unlearned, retrain)  # |gaps|: symmetric


def test_attack_metrics_exact_on_hand_made_scores():
    got = evaluation.attack_metrics(np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.6, 0.5, 0.3, 0.1, 0.05]))
    # AUC: 17 of 20 member/non-member pairs ordered right; best threshold 0.7: TPR 3/4, FPR 0
    assert got["auc"] == pytest.approx(85.0) and got["balanced_acc"] == pytest.approx(87.5)
    assert got["tpr_at_1fpr"] == pytest.approx(75.0) and got["advantage"] == pytest.approx(75.0)
    assert got["youden_acc"] == pytest.approx(100 * 8 / 9)  # unbalanced: 3 members + 5 non-members right of 9

    # One false positive among 100 non-members is FPR = 1%, still allowed: TPR 3/4 at threshold 0.5.
    nonmembers = np.concatenate([[1.0], np.linspace(0, 0.3, 99)])
    got = evaluation.attack_metrics(np.array([0.9, 0.8, 0.5, 0.1]), nonmembers)
    assert got["tpr_at_1fpr"] == pytest.approx(75.0)
    assert got["auc"] == pytest.approx(100 * (99 * 3 + np.sum(np.linspace(0, 0.3, 99) < 0.1)) / 400)

    # Ties count half: correctness members [1, 1, 0] vs non-members [1, 0, 0, 0] -> (1 + 6 + 1.5) / 12
    got = evaluation.attack_metrics(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    assert got["auc"] == pytest.approx(100 * 8.5 / 12)


def test_threshold_mias_score_every_attack_per_family():
    y = np.array([0, 1, 0, 1])
    sure, unsure = np.array([[0.95, 0.05], [0.1, 0.9], [0.99, 0.01], [0.2, 0.8]]), np.full((4, 2), 0.5)
    outputs = outputs_of({"forget": (sure, y), "test": (unsure, y), "val": (unsure[:0], y[:0])})
    result = evaluation.threshold_mias(outputs)
    assert set(result) == {"test"}  # an empty val part makes no family
    assert set(result["test"]) == {"loss", "confidence", "entropy", "m_entropy", "correctness"}
    for name in ("loss", "confidence", "entropy", "m_entropy"):  # every confident member beats every 0.5 row
        assert result["test"][name]["auc"] == pytest.approx(100.0), name
    # correctness: members all right; the 0.5 rows predict class 0, right for half -> (8 + 8 / 2) / 16
    assert result["test"]["correctness"]["auc"] == pytest.approx(75.0)
    assert result["test"]["loss"] == evaluation.attack_metrics(-outputs["forget"]["losses"].astype(np.float64),
                                                               -outputs["test"]["losses"].astype(np.float64))


def test_js_divergence_zero_for_identical_and_matches_a_hand_computation():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.9, 0.1], [0.0, 1.0]])
    assert evaluation.js_divergence(p, p) == 0.0
    m = [0.7, 0.3]
    row0 = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + \
        0.5 * (0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1]))
    assert evaluation.js_divergence(p, q) == pytest.approx((row0 + math.log(2)) / 2, rel=1e-12)  # disjoint: ln 2


def test_gap_avg_variants_and_retrain_gaps_without_arrays():
    def metrics(ua, ra, ta, auc, acc, mia=10.0):
        return {"UA": ua, "RA": ra, "TA": ta, "MIA": mia, "rmia": {"test": {"auc": auc, "youden_acc": acc}}}
    retrain, unlearned = metrics(10, 99, 94, 50, 90), metrics(14, 97, 93, 58, 96)
    gaps = evaluation.gap_avg(unlearned, retrain)  # |gaps|: forget acc 4, RA 2, TA 1, RMIA acc 6, RMIA AUC 8
    assert gaps == pytest.approx({"average_gap": (2 + 1 + 4 + 6 + 8) / 5, "average_gap_auc": (2 + 1 + 4 + 8) / 4,
                                  "average_gap_test": (8 + 1) / 2})
    # Metrics only (no outputs.npz beside the retrain): avg_gap, ToW, ToW-MIA and GapAvg, but no JS.
    got = evaluation.retrain_gaps(unlearned, None, retrain)
    assert got["GapAvg"] == gaps["average_gap_auc"] and "js" not in got
    assert got["avg_gap"] == pytest.approx((4 + 2 + 1 + 0) / 4)
    assert got["ToW"] == pytest.approx(0.96 * 0.98 * 0.99)


# ---------------------------------------------------------------------------------------------------------
# RMIA on tiny MLPs trained here: a retrained model is exchangeable with its references, a memoriser is not

def gaussian_parts(seed=0, d=20, classes=4):
    """Overlapping Gaussian classes: a wide MLP fits its 200-300 training points and cannot generalise well,
    so what it trained on stands out."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.35, (classes, d))

    def draw(n):
        y = rng.integers(0, classes, n)
        return (means[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y
    return {part: draw(n) for part, n in (("retain", 200), ("forget", 100), ("test", 500), ("val", 500))}


def mlp_outputs(parts, train_parts, seed) -> Outputs:
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([parts[p][0] for p in train_parts]))
    y = torch.from_numpy(np.concatenate([parts[p][1] for p in train_parts]))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 4))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return outputs_of({p: (torch.softmax(net(torch.from_numpy(parts[p][0])), 1).numpy(), parts[p][1])
                           for p in ("forget", "test", "val")})


def test_rmia_near_chance_for_retrain_and_high_for_a_memoriser():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = gaussian_parts()
        references = [mlp_outputs(parts, ["retain"], seed) for seed in (1, 2, 3, 4)]
        retrain = evaluation.rmia_metrics(mlp_outputs(parts, ["retain"], 0), references)
        memoriser = evaluation.rmia_metrics(mlp_outputs(parts, ["retain", "forget"], 0), references)
    finally:
        torch.set_num_threads(threads)
    assert abs(retrain["rmia_auc"] - 50) < 8 and abs(retrain["rmia_full_auc"] - 50) < 8, retrain
    assert memoriser["rmia_auc"] > retrain["rmia_auc"] + 15, (memoriser, retrain)
    assert memoriser["rmia_full_auc"] > retrain["rmia_full_auc"] + 20, (memoriser, retrain)
    assert memoriser["rmia"]["K"] == 4 and set(memoriser["rmia_full"]) == {"a", "gamma", "test", "val"}


def test_full_rmia_is_the_share_of_the_population_it_beats():
    # a = 1: Pr(x) = mean reference p; LR = p_target / Pr. Population LRs 0.5, 1, 2; x with LR 1 beats 2 of 3.
    target, refs = np.array([0.4]), np.array([[0.4]])
    pop_target, pop_refs = np.array([0.2, 0.4, 0.8]), np.array([[0.4, 0.4, 0.4]])
    assert evaluation.rmia_full_scores(target, refs, pop_target, pop_refs, a=1.0)[0] == pytest.approx(2 / 3)
    # gamma = 2 asks LR(x) >= 2 LR(z): only z with LR 0.5 qualifies
    assert evaluation.rmia_full_scores(target, refs, pop_target, pop_refs, a=1.0, gamma=2.0)[0] == \
        pytest.approx(1 / 3)
    # a = 0: Pr(x) = (p_ref + 1) / 2
    assert evaluation.rmia_scores(np.array([0.5]), np.array([[0.2], [0.4]]))[0] == pytest.approx(math.log(0.5 / 0.3))


# ---------------------------------------------------------------------------------------------------------
# summarize: 95% t-intervals and the ToW columns

def fake_run(folder, seed, **metrics):
    os.makedirs(folder, exist_ok=True)
    record = {"config": {"unlearn": "FT", "dataset": "cifar10", "arch": "resnet18", "seed": seed},
              "forget": {"kind": "random", "n": 450}, "metrics": metrics}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)


def test_summarize_t_interval_exact(tmp_path):
    for seed, (ua, tow) in enumerate([(1.0, 0.90), (2.0, 0.92), (3.0, 0.94), (4.0, 0.96)]):
        fake_run(tmp_path / f"ft-{seed}", seed, UA=ua, RA=99.0, TA=94.0, MIA=10.0, ToW=tow)
    row = summ.summarize(str(tmp_path), ci="t95")[0]
    t3 = 3.182446305284263  # t_{0.975, 3} from a table
    assert row["UA"] == pytest.approx((2.5, t3 * math.sqrt(5 / 3) / 2), rel=1e-12)
    assert row["RA"] == pytest.approx((99.0, 0.0))
    assert summ.summarize(str(tmp_path))[0]["UA"] == pytest.approx((2.5, math.sqrt(5 / 3)))  # std by default
    table = summ.format_table([row], columns=summ.COLUMNS + summ.present([row]))
    assert "ToW" in table and "0.930 ± 0.041" in table and "GapAvg" not in table
    fake_run(tmp_path / "one" / "ga", 1, UA=5.0, RA=99.0, TA=94.0, MIA=10.0)
    lone = summ.summarize(str(tmp_path / "one"), ci="t95")[0]
    assert math.isnan(lone["UA"][1]) and "| 5.00 |" in summ.format_table([lone])  # one run: no interval


# ---------------------------------------------------------------------------------------------------------
# The run integration on digits (in-process: no interpreter start per run)

def cli(monkeypatch, main, *argv):
    monkeypatch.setattr(sys, "argv", ["prog", *map(str, argv)])
    run_cli(main)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    out = tmp_path_factory.mktemp("orig")
    with pytest.MonkeyPatch.context() as mp:
        cli(mp, main_train.main, "--dataset", "digits", "--arch", "convnetd1", "--epochs", "3", "--batch_size", "64",
            "--lr", "0.05", "--scheduler", "cosine", "--quiet", "--save_dir", out)
    return str(out / "model.pt")


FORGET = ("--class_to_replace", "-1", "--num_indexes_to_replace", "100", "--quiet", "--mia_jobs", "1")


def count_calls(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_outputs_written_and_every_metric_without_reinference(original, tmp_path, monkeypatch):
    cache = tmp_path / "refs"
    cli(monkeypatch, main_forget.main, "--mask", original, "--unlearn", "retrain", *FORGET, "--references", "2",
        "--reference_cache", cache, "--save_dir", tmp_path / "retrain")
    predicts = count_calls(monkeypatch, training, "predict")
    cli(monkeypatch, main_forget.main, "--mask", original, "--unlearn", "none", *FORGET, "--references", "2",
        "--reference_cache", cache, "--save_dir", tmp_path / "none",
        "--retrain_result", tmp_path / "retrain" / "results.json")
    assert len(predicts) == 4  # forget, retain, val, test (no held-out part in val10); references cached

    outputs = evaluation.load_outputs(str(tmp_path / "none" / "outputs.npz"))
    assert set(outputs.parts) == set(evaluation.PARTS) and not outputs.has("heldout")
    forget = outputs["forget"]
    assert forget["probs"].dtype == np.float32 and forget["probs"].shape == (100, 10)
    assert np.array_equal(forget["indices"], np.load(tmp_path / "none" / "forget_indices.npy"))
    assert np.allclose(forget["losses"], -np.log(outputs.true_probs("forget")), atol=1e-4)

    metrics = json.load(open(tmp_path / "none" / "results.json"))["metrics"]
    for key in ("ToW", "ToW_MIA", "GapAvg", "avg_gap", "rmia_auc", "rmia_full_auc", "forget_entropy_gap"):
        assert isinstance(metrics[key], float), key
    assert set(metrics["js"]) == {"forget", "retain", "val", "test"} and metrics["js"]["forget"] > 0
    assert set(metrics["threshold_mia"]) == {"test", "val"}
    assert set(metrics["gap_avg"]) == {"average_gap", "average_gap_auc", "average_gap_test"}

    # The same numbers again from the saved arrays alone (with the cached references' arrays).
    references = [evaluation.load_outputs(p) for p in sorted(glob.glob(str(cache / "*" / "ref*" / "outputs.npz")))]
    again = evaluation.metrics_from_outputs(outputs, 1, references,
                                            evaluation.load_retrain(str(tmp_path / "retrain" / "results.json")))
    assert len(predicts) == 4
    for key in ("UA", "MIA", "ToW", "ToW_MIA", "GapAvg", "rmia_auc", "rmia_full_auc", "forget_entropy"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-9), key
    assert again["js"] == pytest.approx(metrics["js"])


def test_reference_cache_reused_rebuilt_and_resumed(original, tmp_path, monkeypatch):
    cache = tmp_path / "refs"
    trained = count_calls(monkeypatch, METHODS["retrain"], "run")

    def run(model=original, k=2):
        trained.clear()
        cli(monkeypatch, main_forget.main, "--mask", model, "--unlearn", "none", *FORGET, "--references", k,
            "--reference_cache", cache, "--save_dir", tmp_path / "run")
        return len(trained), sorted(os.listdir(cache))

    n, folders = run()
    assert n == 2 and len(folders) == 1
    assert run() == (0, folders)                # nothing changed: reused
    n, more = run(k=3)
    assert n == 3 and len(more) == 2            # K is in the key

    record = load_checkpoint(original)          # the same weights with another recipe
    record["recipe"] = {**record["recipe"], "lr": 0.02}
    save_checkpoint(record, str(tmp_path / "other.pt"))
    n, most = run(model=tmp_path / "other.pt")
    assert n == 2 and len(most) == 3

    # A killed run: ref1 never finished, ref0 was killed between its model.pt and its outputs.npz.
    first = cache / folders[0]
    for name in ("model.pt", "outputs.npz"):
        os.remove(first / "ref1" / name)
    os.remove(first / "ref0" / "outputs.npz")
    assert run() == (1, most)
    assert (first / "ref0" / "outputs.npz").is_file() and (first / "ref1" / "model.pt").is_file()


def test_evaluation_is_fp32_when_amp_is_on(original, digits, tmp_path, monkeypatch):
    """The same weights evaluated by an amp run and a plain one: bit-identical per-example arrays, so identical
    metrics (--amp governs updates only), although the amp run's bf16 autocast changes the model's logits."""
    model, _ = models.load_model(original)
    arrays, metrics = {}, {}
    for amp in (False, True):
        with monkeypatch.context() as mp:
            if amp:
                cpu_bf16_amp(mp)
            cli(mp, main_forget.main, "--mask", original, "--unlearn", "none", *FORGET,
                "--save_dir", tmp_path / str(amp))
            changed = amp_changes_logits(model, next(iter(digits.loader("val"))).x)
        assert changed == amp  # the patched amp does autocast; without it nothing does
        with np.load(tmp_path / str(amp) / "outputs.npz") as npz:
            arrays[amp] = {k: npz[k] for k in npz.files}
        metrics[amp] = json.load(open(tmp_path / str(amp) / "results.json"))["metrics"]
    assert arrays[True].keys() == arrays[False].keys()
    for key, value in arrays[False].items():
        assert np.array_equal(value, arrays[True][key]), key
    assert all(metrics[True][k] == metrics[False][k] for k in ("UA", "RA", "TA", "MIA")), metrics


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_reference_count_is_one_error_line(original, tmp_path, monkeypatch, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        cli(monkeypatch, main_forget.main, "--mask", original, "--unlearn", "none", *FORGET,
            "--save_dir", tmp_path / "x", "--references", value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --references"), err

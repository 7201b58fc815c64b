"""The unlearning evaluation. One predict per part of the data gives the per-example arrays
(evaluation.outputs); every metric is then a pure function of them: UA, RA, TA, val accuracy and the SVC MIAs
(definitions of Unlearn-Sparse / SalUn, reference notes section 4), threshold MIAs, RMIA against reference
models, and the distances to a retrain run (Avg.Gap, ToW, ToW-MIA, GapAvg, JS divergences)."""
import json
import os

import numpy as np

from evaluation.mia import entropy, svc_mia_efficacy
from evaluation.outputs import PARTS, check_aligned, load_outputs, model_outputs, save_outputs
from evaluation.rmia import rmia_metrics
from evaluation.threshold_mia import threshold_mias
from evaluation.tow import gap_avg, js_divergence, tow, tow_mia
from utils import Timer, UsageError

GAP_KEYS = ("UA", "RA", "TA", "MIA")


def _accuracy(correct: np.ndarray) -> float:
    """Percent of True entries; NaN for an empty split."""
    return float(100.0 * correct.mean()) if len(correct) else float("nan")


def _mean_entropy(part: dict) -> float:
    """Mean predictive entropy (nats) of a part's softmax rows; NaN when empty."""
    return float(entropy(part["probs"].astype(np.float64)).mean()) if len(part["labels"]) else float("nan")


def unlearning_metrics(outputs, mia_jobs=5) -> dict:
    """UA (100 - forget acc), RA, TA, [TA_forgotten], val_acc, forget_acc (percent), MIA (the confidence
    efficacy, the papers' headline) and mia (all five efficacies), from an Outputs.

    Class-wise forgetting (outputs.meta forget_classes): those classes leave the test set for TA and the MIA's
    non-member shadow set, and their test accuracy is reported as TA_forgotten."""
    forget, retain, test = outputs["forget"], outputs["retain"], outputs["test"]
    forget_classes = outputs.meta["forget_classes"]
    kept = ~np.isin(test["labels"], forget_classes)  # all True for random forgetting
    if not kept.any():
        raise UsageError(f"--class_to_replace: forgetting classes {forget_classes} leaves no test samples")
    t_correct = outputs.correct("test")
    metrics = {"UA": 100.0 - _accuracy(outputs.correct("forget")), "RA": _accuracy(outputs.correct("retain")),
               "TA": _accuracy(t_correct[kept])}
    if forget_classes:
        metrics["TA_forgotten"] = _accuracy(t_correct[~kept])
    metrics["val_acc"] = _accuracy(outputs.correct("val"))
    metrics["forget_acc"] = _accuracy(outputs.correct("forget"))

    # Shadow members: the first |test| retain samples in dataset order (all of them when the retain set is
    # smaller), as the reference's retain Subset gives them.
    n_shadow = min(int(kept.sum()), len(retain["labels"]))
    mia = svc_mia_efficacy(retain["probs"][:n_shadow], retain["labels"][:n_shadow], test["probs"][kept],
                           test["labels"][kept], forget["probs"], forget["labels"], jobs=mia_jobs)
    metrics["MIA"] = mia["confidence"]
    metrics["mia"] = mia
    return metrics


def retrain_gaps(metrics: dict, outputs, retrain_metrics: dict, retrain_outputs=None, references=None) -> dict:
    """Distances to the retrain run: avg_gap, ToW and ToW_MIA from its metrics alone; with its arrays also `js`
    (mean per-example JS per part, nats) and forget_entropy_gap (|H_u - H_r|, mean forget entropies); GapAvg
    (and `gap_avg`, all three variants) when both sides have RMIA, the retrain's measured with the same
    references when its arrays are there."""
    gaps = {"avg_gap": avg_gap(metrics, retrain_metrics), "ToW": tow(metrics, retrain_metrics),
            "ToW_MIA": tow_mia(metrics, retrain_metrics)}
    if retrain_outputs is not None:
        check_aligned(outputs, retrain_outputs, [p for p in PARTS if p in outputs.parts],
                      "--retrain_result's outputs.npz")
        gaps["js"] = {p: js_divergence(outputs[p]["probs"], retrain_outputs[p]["probs"])
                      for p in PARTS if outputs.has(p)}
        gaps["forget_entropy_gap"] = abs(metrics["forget_entropy"] - _mean_entropy(retrain_outputs["forget"]))
        if references:
            retrain_metrics = {**retrain_metrics, **rmia_metrics(retrain_outputs, references)}
    if "test" in metrics.get("rmia", {}) and "test" in (retrain_metrics.get("rmia") or {}):
        gaps["gap_avg"] = gap_avg(metrics, retrain_metrics)
        gaps["GapAvg"] = gaps["gap_avg"]["average_gap_auc"]
    return gaps


def metrics_from_outputs(outputs, mia_jobs=5, references=None, retrain=None) -> dict:
    """Every metric of one model from its arrays. references: the RMIA reference models' Outputs (or None);
    retrain: (metrics, Outputs or None) of the matching retrain run (or None)."""
    metrics = unlearning_metrics(outputs, mia_jobs)
    metrics["forget_entropy"] = _mean_entropy(outputs["forget"])
    metrics["threshold_mia"] = threshold_mias(outputs)
    if references:
        metrics.update(rmia_metrics(outputs, references))
    if retrain is not None:
        metrics.update(retrain_gaps(metrics, outputs, *retrain, references=references))
    return metrics


def evaluate_unlearning(model, data, forget_idx, retain_idx, forget_classes=None, batch_size=1024, mia_jobs=5,
                        outputs_path=None, references=None, retrain_result=None, features=False) -> dict:
    """Every unlearning metric of `model`, from one fp32 predict pass over forget, retain, val, test (and
    held-out; see model_outputs).

    forget_idx / retain_idx: official train indices; forget_classes: the forgotten classes for class-wise
    forgetting (see unlearning_metrics). outputs_path: also write the arrays there (outputs.npz); references:
    the RMIA references' Outputs; retrain_result: a retrain run's results.json (its outputs.npz beside it is
    used when present); features: keep penultimate features in the arrays. Returns the metrics dict of
    metrics_from_outputs plus eval_s (seconds)."""
    if len(np.asarray(forget_idx).reshape(-1)) == 0:
        raise UsageError("forget set is empty (check --class_to_replace / --num_indexes_to_replace / "
                         "--forget_indices)")
    if len(np.asarray(retain_idx).reshape(-1)) == 0:
        raise UsageError("retain set is empty: nothing left to measure RA or to train the MIA's shadow members")
    if forget_classes is not None and np.ndim(forget_classes) == 0:
        forget_classes = [forget_classes]
    retrain = load_retrain(retrain_result) if retrain_result else None  # before inference: fail fast

    with Timer(next(model.parameters()).device) as timer:
        outputs = model_outputs(model, data, forget_idx, retain_idx, forget_classes, batch_size, features=features)
        metrics = metrics_from_outputs(outputs, mia_jobs, references, retrain)
    if outputs_path:
        save_outputs(outputs, outputs_path)
    metrics["eval_s"] = timer.seconds
    return metrics


def avg_gap(metrics: dict, reference: dict, keys=GAP_KEYS) -> float:
    """SalUn's Avg.Gap: the mean |metric - reference| over `keys`, in percentage points."""
    missing = [k for k in keys if k not in metrics or k not in reference]
    if missing:
        raise UsageError(f"avg_gap: {', '.join(missing)} missing from the metrics or the retrain reference")
    return float(np.mean([abs(float(metrics[k]) - float(reference[k])) for k in keys]))


def load_reference_metrics(path: str, keys=GAP_KEYS) -> dict:
    """The top-level `metrics` of a retrain run's results.json, checked to hold numeric `keys`."""
    if not os.path.isfile(path):
        raise UsageError(f"--retrain_result: '{path}' does not exist (give a retrain run's results.json)")
    try:
        with open(path) as f:
            metrics = json.load(f).get("metrics")
    except (OSError, ValueError, AttributeError) as e:
        raise UsageError(f"--retrain_result: cannot read '{path}' as a results.json ({type(e).__name__})")
    if not isinstance(metrics, dict):
        raise UsageError(f"--retrain_result: '{path}' has no top-level 'metrics' object")
    bad = [k for k in keys if not isinstance(metrics.get(k), (int, float)) or isinstance(metrics.get(k), bool)]
    if bad:
        raise UsageError(f"--retrain_result: '{path}' lacks numeric metrics {', '.join(bad)} (expected "
                         f"{', '.join(keys)})")
    return metrics


def load_retrain(path: str):
    """(metrics, Outputs or None) of a retrain run: its results.json and the outputs.npz beside it, if any."""
    metrics = load_reference_metrics(path)
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "outputs.npz")
    return metrics, (load_outputs(beside) if os.path.isfile(beside) else None)

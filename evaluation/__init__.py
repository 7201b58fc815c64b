"""Evaluation of unlearned models: per-example arrays computed once (`outputs`), then accuracies, SVC and
threshold MIAs, RMIA, and the distances to retrain (Avg.Gap, ToW, ToW-MIA, GapAvg, JS); `evaluation.summarize`
makes tables.

Imports `training`, `datasets` and `utils` only: the judge never knows the contestants (no `unlearn/`).
The summary tools stay in their submodule (not re-exported here): `evaluation.summarize` names the module,
and `python -m evaluation.summarize` runs it without importing it twice."""
from evaluation.metrics import (GAP_KEYS, avg_gap, evaluate_unlearning, load_reference_metrics, load_retrain,
                                metrics_from_outputs, retrain_gaps, unlearning_metrics)
from evaluation.mia import FEATURES, mia_features, modified_entropy, svc_mia_efficacy
from evaluation.outputs import PARTS, Outputs, load_outputs, model_outputs, save_outputs
from evaluation.rmia import rmia_full_scores, rmia_metrics, rmia_scores
from evaluation.threshold_mia import attack_metrics, threshold_mias
from evaluation.tow import gap_avg, js_divergence, tow, tow_mia

__all__ = ["GAP_KEYS", "avg_gap", "evaluate_unlearning", "load_reference_metrics", "load_retrain",
           "metrics_from_outputs", "retrain_gaps", "unlearning_metrics", "FEATURES", "mia_features",
           "modified_entropy", "svc_mia_efficacy", "PARTS", "Outputs", "load_outputs", "model_outputs",
           "save_outputs", "rmia_full_scores", "rmia_metrics", "rmia_scores", "attack_metrics", "threshold_mias",
           "gap_avg", "js_divergence", "tow", "tow_mia"]

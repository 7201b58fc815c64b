"""RMIA against an unlearned model, from its arrays and those of K reference models trained on the retain set
only (so every forget, test and val example is OUT for every reference; reference notes, section 3.2).

Two metrics, kept apart because they rank examples differently:
- `rmia`, ReGUn's simplified OUT-only attack (for reproducing its tables and GapAvg): the log-ratio
  s(x) = log p(y|x) - log mean_k p_k(y|x), probabilities clipped at 1e-12.
- `rmia_full`, the offline RMIA of Zarifzadeh et al. (ICML 2024): Pr(x) = ((1 + a) mean_k p_k(y|x) + 1 - a) / 2
  approximates the IN/OUT average from OUT models only, LR(x) = p(y|x) / Pr(x), and the score is the share of
  population examples z with LR(x) / LR(z) >= gamma. The population is the other non-member part (val when the
  non-members are test, test when they are val), so no example is compared with itself.
Members = forget; families `test` and `val` name the non-members, as in `evaluation.threshold_mia`."""
import numpy as np

from evaluation.outputs import check_aligned
from evaluation.threshold_mia import attack_metrics

CLIP = 1e-12
PARTS = ("forget", "test", "val")    # the parts an attack reads from the references
OFFLINE_A, GAMMA = 0.3, 1.0          # Zarifzadeh et al.'s offline a (Privacy Meter's default) and gamma


def _log(p):
    return np.log(np.clip(np.asarray(p, np.float64), CLIP, None))


def rmia_scores(target_p, ref_p) -> np.ndarray:
    """ReGUn's OUT-only log-ratio; target_p [N] = p(y|x) of the attacked model, ref_p [K, N] of the references."""
    return _log(target_p) - _log(np.mean(ref_p, axis=0))


def rmia_full_scores(target_p, ref_p, pop_target_p, pop_ref_p, a=OFFLINE_A, gamma=GAMMA) -> np.ndarray:
    """Offline RMIA: Pr_z[LR(x) / LR(z) >= gamma] for each x, over the population z (arrays as rmia_scores)."""
    log_lr = lambda p, refs: _log(p) - _log((1 + a) / 2 * np.mean(refs, axis=0) + (1 - a) / 2)
    population = np.sort(log_lr(pop_target_p, pop_ref_p))
    # LR(x) / LR(z) >= gamma  <=>  log LR(z) <= log LR(x) - log gamma
    return np.searchsorted(population, log_lr(target_p, ref_p) - np.log(gamma), side="right") / len(population)


def rmia_metrics(outputs, references, a=OFFLINE_A, gamma=GAMMA) -> dict:
    """{"rmia": {family: attack}, "rmia_full": {family: attack, "a", "gamma"}, "rmia_auc", "rmia_full_auc"}
    for the model of `outputs` (evaluation.outputs.Outputs), `references` a list of the references' Outputs."""
    if not 0 <= a <= 1 or gamma <= 0:
        raise ValueError(f"rmia_metrics: need 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    for k, ref in enumerate(references):
        check_aligned(outputs, ref, PARTS, f"reference model {k}")
    p = lambda part: outputs.true_probs(part)
    refs = lambda part: np.stack([ref.true_probs(part) for ref in references])
    simple, full = {}, {"a": a, "gamma": gamma}
    for family, population in (("test", "val"), ("val", "test")):
        if not outputs.has(family):
            continue
        simple[family] = attack_metrics(rmia_scores(p("forget"), refs("forget")), rmia_scores(p(family), refs(family)))
        if outputs.has(population):
            score = lambda part: rmia_full_scores(p(part), refs(part), p(population), refs(population), a, gamma)
            full[family] = attack_metrics(score("forget"), score(family))
    metrics = {"rmia": {**simple, "K": len(references)}, "rmia_full": full}
    if "test" in simple:
        metrics["rmia_auc"] = simple["test"]["auc"]
    if "test" in full:
        metrics["rmia_full_auc"] = full["test"]["auc"]
    return metrics

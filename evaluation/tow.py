"""Distance of an unlearned model to the retrained one on the same forget set and seed: RUM's ToW and ToW-MIA,
ReGUn's GapAvg variants and Jensen-Shannon divergences (reference notes, sections 3.1 and 3.2).

Inputs are our metrics dicts (accuracies and MIA in percent, `rmia` as written by evaluation.rmia) and softmax
arrays. ToW and ToW-MIA are products in [0, 1] (1 = indistinguishable from retrain); GapAvg is in percentage
points; JS divergences are in nats (natural log, at most ln 2)."""
import numpy as np
from scipy.special import xlogy


def _factor(a, b):
    """1 - |a - b| / 100 for two percentages."""
    return 1.0 - abs(float(a) - float(b)) / 100.0


def tow(u: dict, r: dict) -> float:
    """ToW = (1 - |FA_u - FA_r|/100)(1 - |RA_u - RA_r|/100)(1 - |TA_u - TA_r|/100); FA = forget accuracy
    = 100 - UA, so results without `forget_acc` work too."""
    return _factor(100 - u["UA"], 100 - r["UA"]) * _factor(u["RA"], r["RA"]) * _factor(u["TA"], r["TA"])


def tow_mia(u: dict, r: dict) -> float:
    """ToW-MIA: ToW with the forget-accuracy factor replaced by 1 - |MIA_u - MIA_r|, the SVC confidence MIA
    efficacy as a fraction (ours is in percent, hence the same /100)."""
    return _factor(u["MIA"], r["MIA"]) * _factor(u["RA"], r["RA"]) * _factor(u["TA"], r["TA"])


def _gap_terms(m: dict) -> dict:
    """ReGUn's acc_retain, acc_test, acc_forget and RMIA (test non-members) AUC and `acc` (the unbalanced
    Youden accuracy), all in percent."""
    return {"acc_retain": m["RA"], "acc_test": m["TA"], "acc_forget": 100 - m["UA"],
            "rmia_auc": m["rmia"]["test"]["auc"], "rmia_acc": m["rmia"]["test"]["youden_acc"]}


GAP_AVG = {  # ReGUn's metrics_aggregation: mean |unlearned - retrain| over these terms
    "average_gap": ("acc_retain", "acc_test", "acc_forget", "rmia_acc", "rmia_auc"),
    "average_gap_auc": ("acc_retain", "acc_test", "acc_forget", "rmia_auc"),  # the paper's GapAvg
    "average_gap_test": ("rmia_auc", "acc_test"),
}


def gap_avg(u: dict, r: dict) -> dict:
    """The three GapAvg variants (percentage points) from two metrics dicts that both hold `rmia`."""
    tu, tr = _gap_terms(u), _gap_terms(r)
    return {name: float(np.mean([abs(tu[k] - tr[k]) for k in keys])) for name, keys in GAP_AVG.items()}


def js_divergence(p, q) -> float:
    """Mean over rows of JS(p_i, q_i) = KL(p_i || m_i)/2 + KL(q_i || m_i)/2, m = (p + q)/2, in nats."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = (p + q) / 2
    kl = lambda a: (xlogy(a, a) - xlogy(a, m)).sum(1)  # 0 log 0 = 0; m > 0 wherever a > 0
    return float(np.mean(kl(p) / 2 + kl(q) / 2)) if len(p) else float("nan")

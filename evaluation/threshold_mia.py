"""Threshold membership-inference attacks on one scalar score per example (ReGUn's simple MIAs, with the
metrics the reference notes recommend, section 3.5 / pitfall 7).

Members = the forget set, non-members = the test set (family `test`) or the validation set (family `val`).
Each score is oriented "higher = member": -loss, confidence p_y, -entropy, -modified entropy (the canonical
Song & Mittal form of `evaluation.mia`, not ReGUn's variant) and correctness. For class-wise forgetting every
test example counts as a non-member, the forgotten classes' too (they are non-members, whatever their class).

Reported per attack, in percent: `auc` (ROC AUC, ties counted half), `balanced_acc` (best threshold, members
and non-members weighted equally), `tpr_at_1fpr` (largest TPR at FPR <= 1%), `advantage` (max |TPR - FPR|) and
`youden_acc`: the accuracy on the unbalanced union at the threshold maximising TPR - FPR, ReGUn's `acc`, kept
only so its tables and GapAvg can be compared (with 450 forget vs 10 000 test examples it mostly counts
non-members)."""
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from evaluation.mia import confidence, correctness, entropy, modified_entropy

SCORES = {  # name -> score(outputs part) with "higher = member"
    "loss": lambda part: -part["losses"].astype(np.float64),
    "confidence": lambda part: confidence(part["probs"], part["labels"]),
    "entropy": lambda part: -entropy(part["probs"]),
    "m_entropy": lambda part: -modified_entropy(part["probs"], part["labels"]),
    "correctness": lambda part: correctness(part["probs"], part["labels"]),
}
NON_MEMBERS = ("test", "val")  # the two attack families


def attack_metrics(member_scores, nonmember_scores) -> dict:
    """AUC, balanced accuracy, TPR at 1% FPR, advantage and the unbalanced Youden accuracy, in percent."""
    n_in, n_out = len(member_scores), len(nonmember_scores)
    truth = np.concatenate([np.ones(n_in), np.zeros(n_out)])
    scores = np.concatenate([member_scores, nonmember_scores]).astype(np.float64)
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)  # one point per distinct threshold
    j = tpr - fpr
    best = int(np.argmax(j))
    return {"auc": 100.0 * roc_auc_score(truth, scores),
            "balanced_acc": 100.0 * (1.0 + j[best]) / 2,
            "tpr_at_1fpr": 100.0 * tpr[fpr <= 0.01].max(),  # the first point (0, 0) always qualifies
            "advantage": 100.0 * np.abs(j).max(),
            "youden_acc": 100.0 * (tpr[best] * n_in + (1.0 - fpr[best]) * n_out) / (n_in + n_out)}


def threshold_mias(outputs) -> dict:
    """{family: {score: attack_metrics}} for each non-empty non-member part (evaluation.outputs.Outputs)."""
    members = {name: score(outputs["forget"]) for name, score in SCORES.items()}
    return {family: {name: attack_metrics(members[name], score(outputs[family])) for name, score in SCORES.items()}
            for family in NON_MEMBERS if outputs.has(family)}

"""SVC membership-inference attack, as Unlearn-Sparse / SalUn define MIA-efficacy (`evaluation/SVC_MIA.py`).

An attacker sees only the model's softmax output on an example. For each of five features of that output
(correctness, confidence, entropy, modified entropy, the probability vector) one
`SVC(C=3, gamma='auto', kernel='rbf')` is fitted on shadow data: members (label 1) = retain samples, the
model's training data; non-members (label 0) = test samples. It then classifies the forget set. MIA-efficacy =
100 x the fraction of forget samples classified as non-members (TN / |D_f|): high means the forget set looks
unseen. The papers' tables report the `confidence` feature.

numpy and scikit-learn only (no torch), so it works on arrays from anywhere and fork-started workers stay cheap.
"""
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.special import xlogy

FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")
_LOG_FLOOR = 1e-30  # log(0) is clamped to log(1e-30), as the reference code and Song & Mittal (2021) do


def _log(x):
    return np.log(np.maximum(x, _LOG_FLOOR))


def _true_class(probs, labels):
    return np.take_along_axis(probs, labels[:, None], axis=1)[:, 0]


def correctness(probs, labels):
    """1 where the top-1 prediction is the true label, else 0."""
    return (probs.argmax(1) == labels).astype(np.float64)


def confidence(probs, labels):
    """p_y: the probability of the true label."""
    return _true_class(probs, labels)


def entropy(probs):
    """-sum_i p_i log p_i, with 0 log 0 = 0."""
    return -xlogy(probs, probs).sum(1)


def modified_entropy(probs, labels):
    """Song & Mittal's modified entropy: -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).

    Fixed here: the published `m_entropy` (Unlearn-Sparse / SalUn `SVC_MIA.py`) has two bugs.
    (1) Its "log_reverse_prob" is computed as log(p) instead of log(1 - p), so the non-label terms become
    -p_i log p_i (plain entropy terms). (2) It selects the label entries with `[:, labels]`, which picks the
    label columns of *every* row (each row gets the (1 - p) / log p swap in every class that occurs anywhere
    in the set, i.e. in all classes for a real forget set), not entry y of row n. Together the published
    feature is -sum_i (1 - p_i) log p_i. We use log(1 - p) and swap only entry y of each row."""
    is_label = np.arange(probs.shape[1]) == labels[:, None]
    terms = np.where(is_label, (1.0 - probs) * _log(probs), probs * _log(1.0 - probs))
    return -terms.sum(1)


def mia_features(probs, labels) -> dict:
    """{feature name: [N, d] float64 array} for the SVC (d = 1, or the number of classes for `prob`)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    column = lambda v: v[:, None]
    return {"correctness": column(correctness(probs, labels)),
            "confidence": column(confidence(probs, labels)),
            "entropy": column(entropy(probs)),
            "m_entropy": column(modified_entropy(probs, labels)),
            "prob": probs}


def _fit_predict(x_shadow, y_shadow, x_target):
    """One attack: fit on the shadow points, predict member (1) / non-member (0) for the targets."""
    from sklearn.svm import SVC  # imported by svc_mia_efficacy before any fork: free here
    clf = SVC(C=3, gamma="auto", kernel="rbf")  # gamma='auto' = 1 / n_features, so 1 for the 1-D features
    clf.fit(x_shadow, y_shadow)
    return clf.predict(x_target)


def _executor(jobs: int) -> ProcessPoolExecutor:
    # fork where the platform has it: the workers only run numpy and libsvm (never torch or CUDA), and a fork
    # skips re-importing torch in every worker (~2 s each). Python >= 3.12 warns about forking a process
    # that has threads (torch's pools); that warning is about children that use those threads, which ours
    # do not.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method))


def svc_mia_efficacy(member_probs, member_labels, nonmember_probs, nonmember_labels, target_probs,
                     target_labels, jobs: int = 5) -> dict:
    """MIA-efficacy (percent) of each feature: {name: 100 x fraction of targets predicted non-member}.

    member_* = shadow members (softmax rows [N, K] and labels [N]), nonmember_* = shadow non-members,
    target_* = the forget set. jobs > 1 fits the five SVCs in parallel processes; jobs = 1 runs them inline.
    The SVC fit is deterministic, so both give identical numbers."""
    # sklearn is imported here, not at module level (scripts that never evaluate skip its ~1 s import), and
    # before the pool, so forked workers inherit it.
    import sklearn.svm  # noqa: F401
    sizes = {"member": len(member_labels), "non-member": len(nonmember_labels), "target": len(target_labels)}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise ValueError(f"svc_mia_efficacy: the {', '.join(empty)} set is empty ({sizes})")
    members, nonmembers = mia_features(member_probs, member_labels), mia_features(nonmember_probs,
                                                                                    nonmember_labels)
    targets = mia_features(target_probs, target_labels)
    y_shadow = np.concatenate([np.ones(sizes["member"]), np.zeros(sizes["non-member"])])
    tasks = {name: (np.concatenate([members[name], nonmembers[name]]), y_shadow, targets[name])
             for name in FEATURES}
    if jobs <= 1:
        predictions = {name: _fit_predict(*args) for name, args in tasks.items()}
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            with _executor(min(jobs, len(tasks))) as pool:
                futures = {name: pool.submit(_fit_predict, *args) for name, args in tasks.items()}
                predictions = {name: f.result() for name, f in futures.items()}
    return {name: float(100.0 * (1.0 - pred.mean())) for name, pred in predictions.items()}

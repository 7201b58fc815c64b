"""Which training examples are forgotten.

- by class or at random: datasets.select_forget (the seeds' --class_to_replace / --num_indexes_to_replace);
- from a file: datasets.load_forget_indices (--forget_indices);
- by difficulty (RUM): groups.py (memorisation or proxy groups high/mid/low/mix, entanglement bins), with the
  scores and proxies in memorization.py;
- poisoned (Unlearn-Sparse's backdoor experiment): backdoor.py.
forget_set(args, data) reads the shared forget flags (utils.add_forget_args) and picks the right one.

    python -m forget_sets --dataset cifar10 --class_to_replace 3 --save_dir runs/f3   # preview and save
"""
from datasets import load_forget_indices, select_forget
from forget_sets import groups

DIFFICULTY_FLAGS = ("forget_group", "es_group", "mem_scores", "proxy_file")


def forget_set(args, data):
    """(sorted official forget indices or None, description) from the shared forget flags."""
    if getattr(args, "forget_indices", None):
        idx = load_forget_indices(args.forget_indices, data.train_idx)
        classes = sorted(set(data.y_train_np[idx].tolist()))
        return idx, {"kind": "file", "classes": classes, "n": int(len(idx))}
    if any(getattr(args, k, None) is not None for k in DIFFICULTY_FLAGS):
        return groups.select(args, data)
    return select_forget(data.y_train_np, data.train_idx, data.info.num_classes, args.class_to_replace,
                         args.num_indexes_to_replace, args.seed)

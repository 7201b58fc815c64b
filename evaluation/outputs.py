"""Per-example outputs of one model on every part of the data, computed once (one predict per part) and kept
as `outputs.npz` beside the run, so that every metric is a pure function of arrays: the unlearned model's, the
matching retrain's, and the RMIA reference models'. No metric runs a model again.

outputs.npz holds, per part (forget, retain, val, test, heldout):
  `<part>.probs`    [N, K] float32 softmax (float32: correctness ties and log p_y must not depend on rounding)
  `<part>.labels`   [N] int64
  `<part>.losses`   [N] float32 cross-entropy, from the logits
  `<part>.indices`  [N] int64 official train indices (test-set positions for `test`): aligns two models' rows
  `<part>.features` [N, D] float16 penultimate features, only when asked for
and `meta`: JSON {dataset, split, forget_classes}. Forget and retain rows are in dataset order (sorted)."""
import json
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import training
from evaluation.mia import confidence
from utils import UsageError, save_npz

PARTS = ("forget", "retain", "val", "test", "heldout")


@dataclass
class Outputs:
    parts: dict   # part name -> {"probs", "labels", "losses", "indices"[, "features"]: numpy array}
    meta: dict    # {"dataset", "split", "forget_classes"}

    def __getitem__(self, part):
        return self.parts[part]

    def has(self, part) -> bool:
        return part in self.parts and len(self.parts[part]["labels"]) > 0

    def true_probs(self, part) -> np.ndarray:
        """p_y of every row of a part."""
        return confidence(self[part]["probs"], self[part]["labels"])

    def correct(self, part) -> np.ndarray:
        return self[part]["probs"].argmax(1) == self[part]["labels"]


def _part_outputs(model, data, indices, test, batch_size, features) -> dict:
    if len(indices) == 0:  # nothing to run (e.g. no held-out part in a val10 split)
        arrays = {"probs": np.zeros((0, data.info.num_classes), np.float32), "labels": np.zeros(0, np.int64),
                  "losses": np.zeros(0, np.float32)}
        if features:
            arrays["features"] = np.zeros((0, 0), np.float16)
    else:
        loader = data.loader(indices, test=test, batch_size=batch_size)
        logits, labels = training.predict(model, loader)
        arrays = {"probs": torch.softmax(logits, 1).cpu().numpy(), "labels": labels.cpu().numpy(),
                  "losses": F.cross_entropy(logits, labels, reduction="none").cpu().numpy()}
        if features:
            # a second pass, paid only when asked for
            arrays["features"] = training.embed(model, loader).cpu().numpy().astype(np.float16)
    arrays["indices"] = np.asarray(indices, dtype=np.int64)
    return arrays


def model_outputs(model, data, forget_idx, retain_idx=None, forget_classes=None, batch_size=1024, parts=PARTS,
                  features=False) -> Outputs:
    """The arrays of `model` on `parts` of `data` (datasets.Data); forget/retain are official train indices.
    Always in fp32, as the references measure: a run's --amp governs its updates only, so that a metric never
    depends on the speed flags."""
    indices = {"forget": np.sort(np.asarray(forget_idx, dtype=np.int64).reshape(-1)),
               "retain": np.sort(np.asarray(retain_idx if retain_idx is not None else [], np.int64).reshape(-1)),
               "val": data.val_idx, "test": data.test_indices(), "heldout": data.heldout_idx}
    meta = {"dataset": data.info.name, "split": data.split,
            "forget_classes": sorted(int(c) for c in forget_classes or [])}
    return Outputs({part: _part_outputs(model, data, indices[part], part == "test", batch_size, features)
                    for part in parts}, meta)


def save_outputs(outputs: Outputs, path: str) -> None:
    """Atomically, as `<part>.<field>` arrays plus the JSON `meta` (no pickles: loads with allow_pickle=False)."""
    arrays = {f"{part}.{field}": value for part, fields in outputs.parts.items() for field, value in fields.items()}
    save_npz(path, meta=np.array(json.dumps(outputs.meta)), **arrays)


def load_outputs(path: str) -> Outputs:
    try:
        with np.load(path, allow_pickle=False) as npz:
            parts = {}
            for key in npz.files:
                if key != "meta":
                    part, field = key.split(".", 1)
                    parts.setdefault(part, {})[field] = npz[key]
            return Outputs(parts, json.loads(str(npz["meta"])))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise UsageError(f"'{path}' is not a readable outputs.npz ({type(e).__name__}: {e})")


def check_aligned(a: Outputs, b: Outputs, parts, what: str) -> None:
    """Two models' arrays must describe the same examples, row by row, before any comparison."""
    if (a.meta.get("dataset"), a.meta.get("split")) != (b.meta.get("dataset"), b.meta.get("split")):
        raise UsageError(f"{what}: made on {b.meta.get('dataset')} split {b.meta.get('split')}, not "
                         f"{a.meta.get('dataset')} split {a.meta.get('split')}")
    for part in parts:
        if part not in b.parts or not np.array_equal(a[part]["indices"], b[part]["indices"]):
            raise UsageError(f"{what}: its {part} examples differ from this run's (another forget set or split)")

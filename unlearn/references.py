"""The K reference models of RMIA (ReGUn's OUT references): the `retrain` method itself, run K more times on
the retain set with the original model's recipe and seeds seed+1 .. seed+K, so every forget, test and val
example is OUT for each of them and a retrained model is exchangeable with them (its RMIA AUC is ~50%).

They are cached under --reference_cache in a folder named by a content hash of everything that shapes them
(dataset, split, forget indices, arch, normalisation, pruning masks, recipe, K and seeds): change any of it and
new references are trained, never stale ones reused. Each reference keeps its model.pt and its outputs.npz
(the arrays RMIA reads, evaluation.outputs), written atomically in that order; a killed run trains only the
references that have no outputs.npz yet."""
import argparse
import dataclasses
import hashlib
import json
import os

import numpy as np
import torch

import evaluation
import models
from unlearn.common import get_method
from unlearn.setup import method_config
from utils import Timer, UsageError, save_checkpoint, write_json

PARTS = ("forget", "test", "val")  # members, non-members and RMIA's population


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def retrain_config(run):
    """The retrain method's config with the original recipe, whatever this run's method and flags are."""
    args = argparse.Namespace(**{**vars(run.args), "unlearn": "retrain", "variant": "default", "unlearn_lr": None,
                                 "unlearn_epochs": None, "batch_size": None, "momentum": None, "weight_decay": None})
    return method_config(args, run.record)[1]


def cache_key(run, cfg, k: int) -> dict:
    record, data = run.record, run.data
    masks = record.get("masks") or {}
    return {"dataset": data.info.name, "split": data.split, "arch": record["arch"],
            "norm": [record.get("norm_mean"), record.get("norm_std")],
            "forget": {"n": len(run.forget_idx), "sha": _sha(np.sort(run.forget_idx).astype(np.int64).tobytes())},
            "masks": _sha(b"".join(masks[n].cpu().numpy().tobytes() for n in sorted(masks))) if masks else None,
            "recipe": {"epochs": cfg.unlearn_epochs, "lr": cfg.unlearn_lr, "batch_size": cfg.batch_size,
                       "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "scheduler": cfg.scheduler,
                       "decreasing_lr": cfg.decreasing_lr, "warmup": cfg.warmup,
                       "no_aug": bool((record.get("recipe") or {}).get("no_aug", False))},
            "references": k, "seeds": [run.args.seed + 1 + i for i in range(k)]}


def _train(run, ctx, cfg, key, seed):
    """One reference: the retrain method on a retain loader seeded with `seed`, with this run's masks."""
    augment = {"augment": None} if key["recipe"]["no_aug"] else {}
    retain = run.data.loader(run.retain_idx, train=True, batch_size=cfg.batch_size, seed=seed, **augment)
    ref_ctx = dataclasses.replace(ctx, retain=retain, forget=None, seed=seed, freeze_bn=False, history=[])
    # fork_rng: the initialisation draws from torch's global generator; the run's own method must see the
    # same random stream with or without --references.
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return get_method("retrain").apply(run.model, ref_ctx, cfg)


def reference_outputs(run, ctx, k: int, cache_root: str) -> list:
    """The references' Outputs (forget, test, val), trained or loaded from the cache. ctx: the run's Context
    before its method ran (pristine masks, make_model, device)."""
    if k < 1:
        raise UsageError(f"--references: must be at least 1, got {k}")
    cfg = retrain_config(run)
    key = cache_key(run, cfg, k)
    digest = _sha(json.dumps(key, sort_keys=True).encode())
    folder = os.path.join(cache_root, f"{key['dataset']}-{key['arch']}-{digest}")
    write_json(key, os.path.join(folder, "key.json"))  # what the hash stands for, for people
    references, trained = [], 0
    with Timer(run.device) as t:
        for i, seed in enumerate(key["seeds"]):
            model_path, outputs_path = (os.path.join(folder, f"ref{i}", name) for name in ("model.pt", "outputs.npz"))
            if os.path.isfile(outputs_path):
                references.append(evaluation.load_outputs(outputs_path))
                continue
            if os.path.isfile(model_path):  # killed between the two files: the model is finished
                model, _ = models.load_model(model_path, run.device)
            else:
                if not ctx.quiet:
                    print(f"reference {i + 1}/{k}: retrain on the retain set, seed {seed}", flush=True)
                model = _train(run, ctx, cfg, key, seed)
                save_checkpoint(models.model_record(model, key["arch"], run.data.info, *key["norm"],
                                                    split=run.data.split, train_on="retain", epoch=cfg.unlearn_epochs,
                                                    metrics={}, recipe=key["recipe"], seed=seed,
                                                    masks=ctx.masks, forget_indices=torch.from_numpy(run.forget_idx)),
                                model_path)
                trained += 1
            outputs = evaluation.model_outputs(model, run.data, run.forget_idx, parts=PARTS)
            evaluation.save_outputs(outputs, outputs_path)
            references.append(outputs)
    print(f"references: {k} in {folder} ({trained} trained, {k - trained} reused, {t.seconds:.1f}s)")
    return references

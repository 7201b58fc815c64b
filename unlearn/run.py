"""One unlearning run, shared by main_forget.py (real data) and main_forget_distill.py (distilled data):
select the forget set, prepare the output folder, run the method on whatever loaders the caller built,
evaluate on real data, and write forget_indices.npy, results.json and (optionally) model.pt."""
import os
from dataclasses import dataclass, field

import numpy as np
import torch

import evaluation
import models
import training
from datasets import save_forget_indices
from forget_sets import forget_set
from unlearn.common import Context
from unlearn.references import reference_outputs
from unlearn.setup import is_classwise
from utils import Timer, UsageError, default_save_dir, prepare_save_dir, run_record, save_checkpoint, write_json


@dataclass
class Run:
    """What a run knows before its method starts."""
    script: str
    args: object
    cfg: object
    method: object               # unlearn Method, or None for `--unlearn none`
    model: torch.nn.Module
    record: dict                 # the original model.pt's metadata
    data: object                 # datasets.Data, real data (the evaluation always uses it)
    device: torch.device
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    forget: dict                 # {kind, classes, n}
    forget_classes: list         # the forgotten classes when the forget set is whole classes, else []
    indices_file: str = ""
    amp: bool = False
    extra: dict = field(default_factory=dict)   # caller's extra config for results.json
    label: str = ""                              # what to call the run when it is not one method (RUM's plan)

    @property
    def name(self):
        return self.label or (self.method.name if self.method else "none")


def start_run(script, args, cfg, method, model, record, data, device, what_prefix="") -> Run:
    """Forget set, output folder (default runs/<script>/...), forget_indices.npy."""
    forget_idx, forget = forget_set(args, data)
    if forget_idx is None or len(forget_idx) == 0:
        raise UsageError("forget set is empty: give --class_to_replace and/or --num_indexes_to_replace, "
                         "or --forget_indices")
    run = Run(script, args, cfg, method, model, record, data, device, forget_idx,
              np.setdiff1d(data.train_idx, forget_idx), forget, is_classwise(forget_idx, data),
              amp=training.resolve_amp(args.amp, device))
    classes = "-c" + "_".join(map(str, forget["classes"])) if forget["classes"] else ""
    args.save_dir = args.save_dir or default_save_dir(
        script.replace(".py", ""), data.info.name, record["arch"],
        f"{what_prefix}{run.name}-{forget['kind']}{classes}-n{forget['n']}", args.seed)
    prepare_save_dir(args.save_dir)
    run.indices_file = save_forget_indices(forget_idx, args.save_dir)
    return run


def real_loaders(run: Run, seed: int):
    """Shuffled retain and forget loaders over the real training images (augmented unless the resolved no_aug:
    the user's --no_aug, else the method's or preset's)."""
    augment = {"augment": None} if run.cfg.no_aug else {}
    batch = run.cfg.batch_size
    return (run.data.loader(run.retain_idx, train=True, batch_size=batch, seed=seed, **augment),
            run.data.loader(run.forget_idx, train=True, batch_size=batch, seed=seed + 1, **augment))


def make_context(run: Run, retain, forget, freeze_bn=False) -> Context:
    r, device, data, cfg = run.record, run.device, run.data, run.cfg
    masks = {k: v.to(device) for k, v in r["masks"].items()} if r.get("masks") else None
    heldout = (data.loader(data.heldout_idx, train=True, augment=None, batch_size=cfg.batch_size,
                           seed=run.args.seed + 2) if len(data.heldout_idx) else None)
    return Context(
        retain=retain, forget=forget, num_classes=run.data.info.num_classes, device=device, amp=run.amp,
        masks=masks, freeze_bn=freeze_bn,
        make_model=lambda: models.get_model(r["arch"], r["num_classes"], r["in_channels"], r["im_size"],
                                            r["norm_mean"], r["norm_std"]).to(device),
        save_dir=run.args.save_dir, seed=run.args.seed, quiet=run.args.quiet,
        forget_classes=run.forget_classes or None, heldout=heldout)


def execute(run: Run, ctx: Context, extra_metrics=None) -> dict:
    """Run the method (timed: RTE), evaluate on real data, write results (and model.pt), print one line."""
    args, data, model = run.args, run.data, run.model
    references = (reference_outputs(run, ctx, args.references, args.reference_cache)
                  if args.references else None)  # before the method: ctx still holds the original's masks
    with Timer(run.device) as t:
        if run.method is not None:
            model = run.method.apply(model, ctx, run.cfg)
    run.model = model  # a method may return a new module (retrain, BE): callers chaining steps need it
    metrics = evaluation.evaluate_unlearning(model, data, run.forget_idx, run.retain_idx,
                                             run.forget_classes or None, mia_jobs=args.mia_jobs,
                                             outputs_path=os.path.join(args.save_dir, "outputs.npz"),
                                             references=references, retrain_result=args.retrain_result)
    metrics.update(RTE_s=t.seconds, RTE_min=t.seconds / 60)
    metrics.update(extra_metrics(model) if extra_metrics else {})  # may override RTE (RUM: the sum of its steps)
    forget_info = {**run.forget, "classes": run.forget["classes"] or run.forget_classes or None,
                   "classwise": bool(run.forget_classes),
                   "indices_file": os.path.relpath(run.indices_file, args.save_dir)}
    if args.save_model:
        save_checkpoint(models.model_record(model, run.record["arch"], data.info, run.record["norm_mean"],
                                            run.record["norm_std"], split=data.split,
                                            train_on=run.record.get("train_on"), epoch=None, metrics=metrics,
                                            masks=ctx.masks,  # FT_prune_bi grows them
                                            forget_indices=torch.from_numpy(run.forget_idx), unlearn=run.name),
                        os.path.join(args.save_dir, "model.pt"))
    record = run_record(run.script, run.cfg, run.device)
    record["config"] = {**record["config"], **run.extra}
    write_json({**record, "wall_s": t.seconds + metrics.get("eval_s", 0.0), "split": data.split,
                "forget": forget_info, "metrics": metrics, "history": ctx.history},
               os.path.join(args.save_dir, "results.json"))
    gap = f"  gap {metrics['avg_gap']:.2f}" if "avg_gap" in metrics else ""
    print(f"{run.name}: UA {metrics['UA']:.2f}  RA {metrics['RA']:.2f}  TA {metrics['TA']:.2f}  "
          f"MIA {metrics['MIA']:.2f}  RTE {metrics['RTE_s']:.1f}s{gap}  ({run.forget['n']} forgotten, "
          f"{run.forget['kind']}) -> {args.save_dir}")
    return metrics

"""FT: fine-tune the original model on the retain set (catastrophic forgetting of the rest).
`--amu_reg W` (default 0: off) adds W x A-AMU's loss-distribution regulariser (unlearn/a_amu.py) to each step.
`--retain_subset True` fine-tunes on a fixed random retain subset as large as the forget set (ReGUn's Finetune).

Presets: `FT@rum` RUM's README (lr 0.01, 10 epochs; batch 256, SGD momentum 0.9, wd 5e-4, --no_aug; its
main_rum.py example uses lr 0.1 for the mid-memorisation step); `FT@regun` ReGUn's mul/finetune.py +
conf/unlearn/finetune.yaml (2 epochs, lr 0.01 on the retain subset; batch 128, momentum 0.9, wd 0)."""
from unlearn.a_amu import LossMatcher
from unlearn.common import REGUN_SETTING, RUM_SETTING, ce, register, retain_subset, run_epochs

PRESETS = {"rum": {**RUM_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 10},
           "regun": {**REGUN_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 2, "retain_subset": True}}


@register("FT", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "amu_reg": 0.0, "retain_subset": False},
          presets=PRESETS)
def finetune(model, ctx, cfg):
    loss = None
    if getattr(cfg, "amu_reg", None):
        matcher = LossMatcher(ctx, cfg, "FT --amu_reg")
        loss = lambda m, batch: ce(m, batch) + matcher(m, len(batch.y))
    retain = retain_subset(ctx) if cfg.retain_subset else ctx.retain
    return run_epochs(model, ctx, cfg, lambda e, opt: ctx.train_epoch(model, retain, opt, f"FT {e + 1}",
                                                                      loss_fn=loss))

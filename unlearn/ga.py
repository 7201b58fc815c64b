"""GA (NegGrad): gradient ascent on the forget set, i.e. minimise -CE there; nothing else is seen.

Presets: `GA@rum` RUM's README (lr 1e-4, 5 epochs; batch 256, SGD momentum 0.9, wd 5e-4, --no_aug); `GA@regun`
ReGUn's mul/neggrad.py + conf/unlearn/neggrad.yaml (10 epochs, lr 0.01; batch 128, momentum 0.9, wd 0)."""
from unlearn.common import REGUN_SETTING, RUM_SETTING, ce, register, run_epochs

PRESETS = {"rum": {**RUM_SETTING, "unlearn_lr": 1e-4, "unlearn_epochs": 5},
           "regun": {**REGUN_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 10}}


@register("GA", "NegGrad", defaults={"unlearn_lr": 1e-4, "unlearn_epochs": 5}, presets=PRESETS)
def gradient_ascent(model, ctx, cfg):
    return run_epochs(model, ctx, cfg, lambda e, opt: ctx.train_epoch(
        model, ctx.forget, opt, f"GA {e + 1}", loss_fn=lambda m, b: -ce(m, b)))

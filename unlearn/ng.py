"""NG (NegGrad+, from the SCRUB paper): alpha * CE(retain batch) - (1 - alpha) * CE(forget batch).

What an epoch is (`--epoch_over`):
  retain (default)  SCRUB's train_negrad and RUM: one pass over the retain set, forget batches cycled alongside
  forget            ReGUn's neggradp: one pass over the forget set, a retain batch alongside each (ReGUn's
                    Lightning `min_size` loader stops at the shorter one; with forget <= retain, as in its
                    1-50% settings, that is the forget set)
The cycled side is re-iterated, so every pass over it reshuffles and re-augments.

Presets: `NG@rum` RUM's README (lr 0.01, 5 epochs, epoch over retain; batch 256, SGD momentum 0.9, wd 5e-4,
--no_aug); the README leaves alpha open, so it is 0.99, main_rum_proxy.py's first (low-memorisation) step.
`NG@regun` ReGUn's neggradp with sequential: false (w_r = w_f = 0.5, i.e. alpha 0.5; 10 epochs, lr 0.01, epoch
over forget; batch 128, momentum 0.9, wd 0)."""
from unlearn.common import REGUN_SETTING, RUM_SETTING, ce, endless, register, run_epochs

PRESETS = {"rum": {**RUM_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 5, "alpha": 0.99, "epoch_over": "retain"},
           "regun": {**REGUN_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 10, "alpha": 0.5, "epoch_over": "forget"}}


@register("NG", "NegGrad+", "neggradp", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 5, "alpha": 0.99,
                                                 "epoch_over": "retain"}, presets=PRESETS)
def neggrad_plus(model, ctx, cfg):
    a = cfg.alpha

    def loss(m, pair):
        retain_batch, forget_batch = pair
        return a * ce(m, retain_batch) - (1 - a) * ce(m, forget_batch)

    retain_stream, forget_stream = endless(ctx.retain), endless(ctx.forget)

    def epoch(e, opt):
        if cfg.epoch_over == "forget":
            pairs = ((r, f) for f, r in zip(ctx.forget, retain_stream))
        else:
            pairs = zip(ctx.retain, forget_stream)
        return ctx.train_epoch(model, pairs, opt, f"NG {e + 1}", loss_fn=loss)

    return run_epochs(model, ctx, cfg, epoch)

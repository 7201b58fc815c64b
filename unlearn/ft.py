"""FT: fine-tune the original model on the retain set (catastrophic forgetting of the rest).
`--amu_reg W` (default 0: off) adds W x A-AMU's loss-distribution regulariser (unlearn/a_amu.py) to each step."""
from unlearn.a_amu import LossMatcher
from unlearn.common import ce, register, run_epochs


@register("FT", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "amu_reg": 0.0})
def finetune(model, ctx, cfg):
    loss = None
    if getattr(cfg, "amu_reg", None):
        matcher = LossMatcher(ctx, cfg, "FT --amu_reg")
        loss = lambda m, batch: ce(m, batch) + matcher(m, len(batch.y))
    return run_epochs(model, ctx, cfg, lambda e, opt: ctx.train_epoch(model, ctx.retain, opt, f"FT {e + 1}",
                                                                      loss_fn=loss))

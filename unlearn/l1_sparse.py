"""FT_prune (l1-sparse, Unlearn-Sparse): FT on the retain set plus alpha_e * ||theta||_1, the un-normalised sum of
|theta| over all parameters, its weight alpha_e scheduled per epoch e = 0..E-1 (`--l1_schedule`):
  sparse (default)  Unlearn-Sparse's FT_l1 (and RUM's): alpha * (1 - e / (E - E0)) for e < E - E0, else 0
                    (E0 = --no_l1_epochs)
  regun             ReGUn's linear_decay: alpha * (2 - 2 (e + 1) / E), i.e. 1.8 alpha ... 0 for E = 10
`--retain_subset True` trains on a fixed random retain subset as large as the forget set (ReGUn's).

Presets: `FT_prune@rum` RUM's README (lr 0.01, 10 epochs, alpha as ours; batch 256, SGD momentum 0.9, wd 5e-4,
--no_aug); `FT_prune@regun` ReGUn's mul/l1sparse.py + conf/unlearn/l1sparse.yaml (10 epochs, lr 0.01, gamma 5e-4,
linear_decay, the retain subset; batch 128, momentum 0.9, wd 0)."""
from unlearn.common import REGUN_SETTING, RUM_SETTING, ce, register, retain_subset, run_epochs


def l1_coefficient(alpha, epoch, epochs, no_l1_epochs=0, schedule="sparse"):
    if schedule == "regun":
        return alpha * (2 - 2 * (epoch + 1) / epochs)
    active = epochs - no_l1_epochs
    return alpha * (1 - epoch / active) if epoch < active else 0.0


PRESETS = {"rum": {**RUM_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 10},
           "regun": {**REGUN_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 10, "alpha": 5e-4, "l1_schedule": "regun",
                     "retain_subset": True}}


@register("FT_prune", "l1_sparse", "FT_l1", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "alpha": 1e-4,
                                                      "l1_schedule": "sparse", "retain_subset": False},
          presets=PRESETS)
def l1_sparse(model, ctx, cfg):
    params = list(model.parameters())
    retain = retain_subset(ctx) if cfg.retain_subset else ctx.retain

    def epoch(e, opt):
        coef = l1_coefficient(cfg.alpha, e, cfg.unlearn_epochs, cfg.no_l1_epochs, cfg.l1_schedule)
        loss = lambda m, b: ce(m, b) + coef * sum(p.abs().sum() for p in params)
        return ctx.train_epoch(model, retain, opt, f"l1-sparse {e + 1}", loss_fn=loss)

    return run_epochs(model, ctx, cfg, epoch)

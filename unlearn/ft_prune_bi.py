"""FT_prune_bi (Unlearn-Sparse's unlearn/FT_prune_bi.py as released, HEAD 80ba55d; not a paper baseline):
fine-tune on the retain set while pruning progressively.

With E = unlearn_epochs and 0-based epoch e, the conv weights are pruned *before* the fine-tuning of epoch e
whenever (E - e) is even (E = 10: before epochs 0, 2, 4, 6, 8), each time removing
prune_rate = 1 - (1 - rate)^(1 / ((E - 1) // 2 + 1)) of the remaining conv weights, by global L1 magnitude or,
with `random_prune`, at random (seeded). For even E that is (E - 1) // 2 + 1 = E / 2 prunings, so the run ends
with `rate` of the conv weights left at its start pruned, and every pruning is followed by two epochs of
fine-tuning. For odd E the released formula counts one pruning more than happen (E = 5 prunes before epochs 1
and 3 only), so the run ends short of `rate`; kept as released. `rate` defaults to 0.95 (the released
arg_parser's default).

An existing pruning mask (a sparse model) is kept and only ever grows; the new mask replaces `ctx.masks`, so
the caller saves it, and Method.apply masks the gradients by it from the next step on."""
from training import pruning
from unlearn.common import register, run_epochs
from utils import UsageError


def prune_epochs(epochs: int) -> list:
    """The 0-based epochs before whose fine-tuning FT_prune_bi prunes (E = 10: [0, 2, 4, 6, 8])."""
    return [e for e in range(epochs) if (epochs - e) % 2 == 0]


def step_rate(rate: float, epochs: int) -> float:
    """The fraction of the remaining conv weights each pruning removes (the released formula)."""
    return 1 - (1 - rate) ** (1 / ((epochs - 1) // 2 + 1))


@register("FT_prune_bi", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "rate": 0.95, "random_prune": False},
          grows_masks=True)
def ft_prune_bi(model, ctx, cfg):
    rate = pruning.check_rate(cfg.rate, "--rate")
    events = prune_epochs(cfg.unlearn_epochs)
    if not events:
        raise UsageError(f"--unlearn_epochs: FT_prune_bi prunes before every second epoch counted from the end, "
                         f"so it needs at least 2 epochs, got {cfg.unlearn_epochs}")
    amount = step_rate(rate, cfg.unlearn_epochs)
    generator = ctx.generator(offset=5) if cfg.random_prune else None

    def epoch(e, opt):
        if e in events:
            if generator is not None:
                ctx.masks = pruning.random_masks(model, amount, generator, ctx.masks)
            else:
                ctx.masks = pruning.magnitude_masks(model, amount, ctx.masks)
            pruning.apply_masks(model, ctx.masks)
            if not ctx.quiet:
                print(f"  FT_prune_bi: pruned before epoch {e + 1}, conv sparsity "
                      f"{pruning.mask_sparsity(ctx.masks):.2f}%", flush=True)
        return ctx.train_epoch(model, ctx.retain, opt, f"FT_prune_bi {e + 1}")

    return run_epochs(model, ctx, cfg, epoch)

"""FT_prune_bi (Unlearn-Sparse's unlearn/FT_prune_bi.py, not a paper baseline): fine-tune on the retain set
while pruning progressively. Every `prune_every` (2) epochs, before the last epoch, global L1-magnitude
pruning over the conv weights removes the same fraction 1 - (1 - rate)^(1/K) of the remaining weights
(K = the number of pruning events), so the run ends with `rate` of the conv weights that were left at its
start pruned, and the final epoch fine-tunes the pruned net. With E = 10 epochs pruning happens after
epochs 2, 4, 6 and 8. An existing pruning mask (a sparse model) is kept and only ever grows; the new mask
replaces `ctx.masks`, so the caller can save it.

`rate` defaults to 0.95 (ending at the sparsity of the Unlearn-Sparse OMP models; the repo's pruning code
had no settled value: its later version used `--rate ** (1 / (E - 1))` per epoch). Both `rate` and
`prune_every` are read from the config when a caller sets them."""
from training import pruning
from unlearn.common import register, run_epochs
from utils import UsageError


def prune_epochs(epochs: int, every: int = 2) -> list:
    """The (1-based) epochs after which FT_prune_bi prunes: every `every` epochs, never after the last."""
    return list(range(every, epochs, every))


@register("FT_prune_bi", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "rate": 0.95, "prune_every": 2})
def ft_prune_bi(model, ctx, cfg):
    rate = pruning.check_rate(cfg.rate, "FT_prune_bi rate")
    events = prune_epochs(cfg.unlearn_epochs, int(cfg.prune_every))
    if not events:
        raise UsageError(f"--unlearn_epochs: FT_prune_bi prunes every {cfg.prune_every} epochs before the last, "
                         f"so it needs at least {int(cfg.prune_every) + 1} epochs, got {cfg.unlearn_epochs}")
    step_rate = 1 - (1 - rate) ** (1 / len(events))

    def epoch(e, opt):
        stats = ctx.train_epoch(model, ctx.retain, opt, f"FT_prune_bi {e + 1}")
        if e + 1 in events:
            ctx.masks = pruning.magnitude_masks(model, step_rate, ctx.masks)
            pruning.apply_masks(model, ctx.masks)
            if not ctx.quiet:
                print(f"  FT_prune_bi: pruned after epoch {e + 1}, conv sparsity "
                      f"{pruning.mask_sparsity(ctx.masks):.2f}%", flush=True)
        return stats

    return run_epochs(model, ctx, cfg, epoch)

"""How a network is trained: the one training loop and its evaluation (loop.py), on-device augmentation
(augment.py: crop+flip, DSA), pruning masks (pruning.py: OMP, IMP, SynFlow) and the prune-rewind-retrain
states of main_prune.py (prune_states.py).

The loop's names are re-exported here, so callers write `training.train_epoch(...)`."""
from training.loop import (RECIPE_KEYS, RESUME_DEFAULTS, RESUME_KEYS, add_recipe_args, apply_masks,  # noqa: F401
                           autocast, build_optimizer, build_scheduler, check_recipe_args, embed, evaluate, fit,
                           masked, masked_gradients, parse_milestones, plot_curves, predict, progress_bar, recipe,
                           resolve_amp, set_train_mode, train_epoch, weighted_ce)

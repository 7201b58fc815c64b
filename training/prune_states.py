"""The pruning schedules of Unlearn-Sparse's main_imp.py / main_synflow.py, one state at a time.

omp / imp: state 0 trains the dense model (saving rewind.pt after --rewind_epoch epochs); each further state
prunes --rate of the remaining conv weights by global magnitude, rewinds the weights to rewind.pt (survivors
only), steps the fresh LR schedule --rewind_epoch times and trains again. synflow: one state pruned at
initialisation. Each state lives in save_dir/state<j>/; its model.pt, written last, marks it finished."""
import os
import warnings

import torch

import models
import training
from training import pruning
from utils import UsageError, load_checkpoint, prepare_save_dir, run_record, save_checkpoint, write_json

PRUNE_KEYS = ("prune", "rate", "rewind_epoch")


class PruneStates:
    """Runs main_prune.py's states on one model; state(j) returns its summary, or None when --stop_after
    stopped it before the end. `keys`: the flags a saved state must have been made with to be reused or
    continued (a caller training on other data adds the flags that made that data, e.g. main_backdoor's
    poison); `script` names the caller in each state's results.json."""

    def __init__(self, args, info, data, model, mean, std, milestones, device, amp, channels_last,
                 keys=PRUNE_KEYS, script="main_prune.py"):
        self.args, self.info, self.data, self.model = args, info, data, model
        self.keys, self.script = tuple(keys), script
        self.mean, self.std, self.milestones, self.device, self.amp = mean, std, milestones, device, amp
        self.channels_last = channels_last
        self.val_loader = data.loader("val", batch_size=1024, channels_last=channels_last)
        self.test_loader = data.loader(data.test_indices(), test=True, batch_size=1024, channels_last=channels_last)
        self.rewind_path = os.path.join(args.save_dir, "rewind.pt")
        self.rewinding = args.prune in ("omp", "imp")
        self.budget = args.stop_after
        self.masks = None

    def state(self, j):
        sdir = os.path.join(self.args.save_dir, f"state{j}")
        if os.path.isfile(os.path.join(sdir, "model.pt")):
            return self._finished(j, sdir)
        prepare_save_dir(sdir)
        self._prune(j, os.path.join(sdir, "masks.pt"))
        return self._train(j, sdir)

    def _finished(self, j, sdir):
        """A state finished earlier: skip it, but carry its weights and mask to the next state."""
        record = load_checkpoint(os.path.join(sdir, "model.pt"), map_location=self.device)
        done = record.get("prune") or {}
        changed = [k for k in self.keys if done.get(k) != vars(self.args)[k]]
        if changed:
            raise UsageError(f"--save_dir: state{j} there was made with other "
                             f"{', '.join('--' + k for k in changed)}; use another --save_dir or the same flags")
        self.model.load_state_dict(record["state_dict"])
        self.masks = {n: m.to(self.device) for n, m in record["masks"].items()} if record.get("masks") else None
        print(f"{state_line(j, record)}  (finished earlier, skipped)")
        return {"state": j, **record["metrics"]}

    def _prune(self, j, masks_path):
        """The state's mask (saved once, so a resumed state keeps it), then weight rewinding."""
        args, model = self.args, self.model
        if os.path.isfile(masks_path):
            self.masks = load_checkpoint(masks_path, map_location=self.device) or None
        else:
            if j == 0 and args.prune == "synflow":
                info = self.info
                self.masks = pruning.synflow_masks(model, args.rate, (info.channels, info.im_size, info.im_size))
            elif j > 0:
                self.masks = pruning.magnitude_masks(model, args.rate, self.masks)
            save_checkpoint({n: m.cpu() for n, m in (self.masks or {}).items()}, masks_path)
        if j > 0:  # weight rewinding: the whole model back to the rewind point, survivors only
            if not os.path.isfile(self.rewind_path):
                raise UsageError(f"--save_dir: '{self.rewind_path}' (state 0's rewind weights) is missing; "
                                 "rerun in a fresh --save_dir")
            model.load_state_dict(load_checkpoint(self.rewind_path, map_location=self.device))
        pruning.apply_masks(model, self.masks)

    def _save_rewind(self, j, epoch):
        if j == 0 and self.rewinding and epoch == self.args.rewind_epoch and not os.path.isfile(self.rewind_path):
            save_checkpoint({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, self.rewind_path)

    def _train(self, j, sdir):
        args, model, masks = self.args, self.model, self.masks
        optimizer = training.build_optimizer(model.parameters(), args.lr, args.momentum, args.weight_decay)
        scheduler = training.build_scheduler(optimizer, args.scheduler, args.epochs, self.milestones, args.warmup)
        if j > 0 and self.rewinding:
            with warnings.catch_warnings():  # stepping before any optimizer step is the point here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(args.rewind_epoch):  # learning-rate rewinding
                    scheduler.step()
        train_loader = self.data.loader(args.train_on, train=True, batch_size=args.batch_size, seed=args.seed + j,
                                        channels_last=self.channels_last,
                                        **({"augment": None} if args.no_aug else {}))
        step_model = torch.compile(model) if args.compile else model
        record = run_record(self.script, args, self.device)
        history, train_seconds, ran, finished = training.fit(
            model, optimizer, scheduler, train_loader, self.val_loader, args.epochs, os.path.join(sdir, "last.pt"),
            vars(args), amp=self.amp, masks=masks, step_model=step_model, quiet=args.quiet, stop_after=self.budget,
            resume_keys=training.RESUME_KEYS + self.keys, on_epoch_start=lambda e: self._save_rewind(j, e),
            label=f"state {j} ")
        if not finished:
            return None
        self._save_rewind(j, args.epochs)  # --rewind_epoch == --epochs: the trained dense weights
        self.budget = None if self.budget is None else self.budget - ran
        test = training.evaluate(model, self.test_loader)
        metrics = {"sparsity": pruning.sparsity(model), "mask_sparsity": pruning.mask_sparsity(masks),
                   "TA": test["acc"], "val_acc": history[-1]["val_acc"], "train_acc": history[-1]["train_acc"],
                   "train_s": train_seconds, "epoch_s_mean": train_seconds / len(history)}
        prune_info = {**{k: vars(args)[k] for k in self.keys}, "state": j}
        record_pt = models.model_record(model, args.arch, self.info, self.mean, self.std, split=self.data.split,
                                        train_on=args.train_on, epoch=args.epochs, metrics=metrics,
                                        recipe=training.recipe(args), prune=prune_info,
                                        **({"masks": {n: m.cpu() for n, m in masks.items()}} if masks else {}))
        training.plot_curves(history, os.path.join(sdir, "curves.png"))
        write_json({**record, "wall_s": train_seconds, "split": self.data.split, "prune": prune_info,
                    "forget": {"kind": "none", "classes": None, "n": 0, "indices_file": None},
                    "metrics": metrics, "history": history}, os.path.join(sdir, "results.json"))
        save_checkpoint(record_pt, os.path.join(sdir, "model.pt"))  # last: its presence marks the state finished
        print(state_line(j, record_pt), flush=True)
        return {"state": j, **metrics}


def state_line(j, record):
    m = record["metrics"]
    return f"state {j}: sparsity {m['sparsity']:6.2f}%  val {m['val_acc']:6.2f}%  test {m['TA']:6.2f}%"

"""A whole distillation run, as distill.py drives it: find and check the buffer, initialise the synthetic set,
iterate (resumable through last.pt), evaluate every --eval_it iterations (best.pt on validation accuracy),
and write distilled.pt, grid.png, curves.png and results.json. The algorithm itself is in matching.py."""
import glob
import math
import os
import time

import torch

import training
from datasets import ZCA, DeviceLoader, load_data
from distillation import experts
from distillation import matching as dd
from utils import UsageError, load_checkpoint, save_checkpoint, write_json

# Flags that must match for last.pt to be continued (the rest, e.g. --Iteration, --eval_it, may change).
RESUME_KEYS = ("dataset", "model", "ipc", "syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr",
               "lr_teacher", "lr_weights", "batch_syn", "pix_init", "dsa", "dsa_strategy", "no_aug", "zca",
               "grad_mode", "weight_grad", "seed", "split_seed", "split", "load_all", "max_files", "max_experts")
EVAL_BATCH = 1024


def find_buffer(args, info):
    """(folder, [(path, record)]) of the buffer to distil from, checked for dataset, model and whitening."""
    direct = experts.buffer_files(args.buffer_path)
    folder = args.buffer_path if direct else experts.buffer_dir(args.buffer_path, info.name, args.model, args.zca)
    files = direct or experts.buffer_files(folder)
    if not files:
        others = sorted(glob.glob(os.path.join(args.buffer_path, "*", "*", "replay_buffer_*.pt")))
        hint = f" (found buffers in {os.path.dirname(others[0])}: check --dataset/--model/--zca)" if others else ""
        raise UsageError(f"--buffer_path: no replay_buffer_*.pt in '{folder}'{hint}; run buffer.py first")
    files = files[:args.max_files] if args.max_files else files
    records = [(path, experts.load_buffer(path, info.name, args.model, args.zca)) for _, path in files]
    first = records[0][1]
    for path, rec in records[1:]:
        if rec["source_digest"] != first["source_digest"] or rec["zca"] != first["zca"]:
            raise UsageError(f"{path} was trained on other data than {records[0][0]}; one folder, one buffer")
    snapshots = first["trajectories"].shape[1]
    if args.max_start_epoch - 1 + args.expert_epochs > snapshots - 1:
        raise UsageError(f"--max_start_epoch {args.max_start_epoch} + --expert_epochs {args.expert_epochs} reach "
                         f"epoch {args.max_start_epoch - 1 + args.expert_epochs}, beyond the buffer's "
                         f"{snapshots - 1} epochs")
    return folder, records


def check_layout(student, record, path):
    if student.names != list(record["param_names"]) or [list(s) for s in student.shapes] != \
            [list(s) for s in record["param_shapes"]]:
        raise UsageError(f"{path}: the trajectories' parameter layout does not fit {record['model']} "
                         f"on {record['dataset']}")


def initial_images(args, info, data, record, space, generator, device):
    """Training-space images and the official indices of the real ones (None for noise)."""
    if args.pix_init == "noise":
        shape = (args.ipc * info.num_classes, info.channels, info.im_size, info.im_size)
        return torch.randn(shape, generator=generator).to(device), None
    pool = dd.init_pool(record["source_indices"].numpy(), data.train_idx)
    chosen = dd.real_init(data.y_train_np, pool, args.ipc, info.num_classes, generator)
    return space(data.x_train.index_select(0, torch.as_tensor(chosen, device=device))), chosen


def method_name(args) -> str:
    base = "tesla" if args.grad_mode == "tesla" else "mtt"
    return base + ("-wdd" if args.lr_weights > 0 else "")


def eval_loaders(space, data):
    """Validation and test loaders of `data` in the training space the synthetic images live in."""
    val = torch.as_tensor(data.val_idx, device=data.x_train.device)
    return (DeviceLoader(space(data.x_train.index_select(0, val)), data.y_train.index_select(0, val),
                         batch_size=EVAL_BATCH), DeviceLoader(space(data.x_test), data.y_test, batch_size=EVAL_BATCH))


class Distiller:
    """The state of one run in args.save_dir: synthetic set, generator, history, evaluations, best."""

    def __init__(self, args, info, device):
        self.args, self.info = args, info
        self.folder, records = find_buffer(args, info)
        record = records[0][1]
        experts.warn_small_norm_maps(args.model, info)
        self.data = data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
        self.space = space = dd.TrainingSpace.of_buffer(records[0][0], record, device)
        self.student = dd.Student(experts.build_expert(args.model, info, 0).to(device))
        check_layout(self.student, record, records[0][0])
        self.pool = dd.ExpertPool([r for _, r in records], device, args.load_all, args.max_experts)
        self.generator = torch.Generator().manual_seed(args.seed)  # every random choice of the run (CPU)
        images, self.init_indices = initial_images(args, info, data, record, space, self.generator, device)
        self.syn = dd.SyntheticSet(images, dd.class_labels(info.num_classes, args.ipc, device), args.lr_teacher,
                                   args.lr_img, args.lr_lr, args.lr_weights, args.lr_floor)
        self.cfg = dd.IterConfig(args.syn_steps, args.batch_syn, args.max_start_epoch, args.expert_epochs,
                                 args.grad_mode, args.weight_grad,
                                 None if (args.no_aug or not args.dsa) else args.dsa_strategy)
        self.val_loader, self.test_loader = eval_loaders(space, data)
        self.paths = {k: os.path.join(args.save_dir, f"{k}.pt") for k in ("distilled", "best", "last")}
        self.state = {"iteration": 0, "history": [], "evals": [], "best": None}
        self.resume()
        self.forget = None if record["forget_indices"] is None else record["forget_indices"].clone()
        self.clamped = sum(h.get("lr_clamped", False) for h in self.state["history"])  # alpha held at the floor
        self.bar = None

    def resume(self):
        """Continue last.pt when there is one, refusing it if it was made with other flags."""
        if not os.path.isfile(self.paths["last"]):
            return
        last = load_checkpoint(self.paths["last"])
        saved = {**training.RESUME_DEFAULTS, **last["config"]}
        changed = [f"--{k}" for k in RESUME_KEYS if saved.get(k) != getattr(self.args, k)]
        if changed:
            raise UsageError(f"{self.paths['last']} was made with other {', '.join(changed)}; use the same flags "
                             "or another --save_dir")
        self.syn.load_state_dict(last["syn"])
        self.generator.set_state(last["generator"])
        self.state = {k: last[k] for k in self.state}
        self.init_indices = last["init_indices"]

    def _init_tensor(self):
        return None if self.init_indices is None else torch.as_tensor(self.init_indices)

    def write_snapshot(self, path, metrics):
        args = self.args
        save_checkpoint(dd.snapshot(self.syn, self.space, self.info, method=method_name(args), arch=args.model,
                                    source=os.path.abspath(self.folder), forget_indices=self.forget,
                                    init_indices=self._init_tensor(), config=vars(args),
                                    iteration=self.state["iteration"], metrics=metrics), path)

    def save_last(self):
        save_checkpoint({"syn": self.syn.state_dict(), "generator": self.generator.get_state(), **self.state,
                         "init_indices": self._init_tensor(), "config": vars(self.args)}, self.paths["last"])

    def evaluate(self, it):
        """Train --num_eval fresh networks on the current set; keep best.pt by validation accuracy."""
        args, syn = self.args, self.syn
        weights = syn.loss_weights() if (args.eval_weighted and syn.learn_weights) else None
        metrics = dd.evaluate_synset(args.model, self.info, syn.images, syn.labels, weights, syn.lr_value,
                                     self.val_loader, self.test_loader, args.num_eval, args.epoch_eval_train,
                                     args.batch_train, args.dsa_strategy if args.dsa else None, args.seed, it)
        self.state["evals"].append({"it": it, **metrics})
        best = self.state["best"]
        if best is None or math.isnan(best["val_acc"]) or metrics["val_acc"] > best["val_acc"]:
            self.state["best"] = {"it": it, **metrics}
            self.write_snapshot(self.paths["best"], metrics)
        self.write_snapshot(self.paths["distilled"], metrics)
        self.bar.write(f"it {it}: val {metrics['val_acc']:.2f}% test {metrics['test_acc']:.2f}% "
                       f"lr {syn.lr_value:.4g}")

    def step(self, it):
        """One distillation iteration, recorded in the history; the first clamp of the lr is reported."""
        stats = dd.distill_iteration(self.student, self.syn, self.pool, self.generator, self.cfg)
        self.state["history"].append({"it": it, **stats})
        self.clamped += stats["lr_clamped"]
        if stats["lr_clamped"] and self.clamped == 1:
            self.bar.write(f"it {it}: the learned lr fell below --lr_floor {self.args.lr_floor:.3g} and is clamped "
                           "there (lower --lr_lr if this repeats; results.json counts the clamped iterations)")
        self.state["iteration"] = it + 1
        if (it + 1) % self.args.save_every == 0:
            self.save_last()
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.3g}")

    def run(self) -> bool:
        """Iterate up to --Iteration (or --stop_after more); evaluations fall due on the way. True when done."""
        args, state = self.args, self.state
        first = state["iteration"]
        end = args.Iteration if args.stop_after is None else min(args.Iteration, first + args.stop_after)
        self.bar = training.progress_bar(range(first, end), "iterations", args.quiet)
        self.loop_started, self.iterations_run = time.perf_counter(), end - first
        it = first
        try:
            for it in range(first, end + 1):
                state["iteration"] = it
                due = it % args.eval_it == 0 or it == args.Iteration
                if args.num_eval and due and not any(e["it"] == it for e in state["evals"]):
                    self.evaluate(it)
                if it < end:
                    self.step(it)
        except dd.Diverged as e:
            self.write_snapshot(self.paths["distilled"], {"diverged_at": it})  # the last good state was restored
            raise UsageError(f"iteration {it}: {e}; the last good state is in {self.paths['distilled']}")
        self.bar.close()
        self.save_last()
        return state["iteration"] >= args.Iteration

    def finish(self, record_head, started) -> dict:
        """Figures and results.json of a finished run; returns the metrics."""
        args, syn, state, info = self.args, self.syn, self.state, self.info
        if not args.num_eval:
            self.write_snapshot(self.paths["distilled"], {})
        final, best = (state["evals"][-1] if state["evals"] else {}), (state["best"] or {})
        metrics = {"val_acc": final.get("val_acc"), "test_acc": final.get("test_acc"),
                   "best_val_acc": best.get("val_acc"), "best_test_acc": best.get("test_acc"),
                   "best_it": best.get("it"), "lr": syn.lr_value,
                   "w_std": float(syn.weights.detach().std()) if len(syn.weights) > 1 else 0.0,
                   "final_loss": state["history"][-1]["loss"] if state["history"] else None,
                   "lr_clamped": self.clamped, "iterations": args.Iteration,
                   "s_per_it_incl_eval": ((time.perf_counter() - self.loop_started) / self.iterations_run
                                          if self.iterations_run else None)}
        dd.save_grid(os.path.join(args.save_dir, "grid.png"), self.space.to_pixels(syn.images).cpu(), syn.labels,
                     syn.weights.detach().cpu(), info.num_classes, info.classes)
        dd.save_curves(os.path.join(args.save_dir, "curves.png"), state["history"], state["evals"])
        forget = self.forget
        forget_desc = {"kind": "none" if forget is None else "buffer", "classes": None,
                       "n": 0 if forget is None else len(forget), "indices_file": None}
        write_json({**record_head, "wall_s": time.perf_counter() - started, "split": self.data.split,
                    "forget": forget_desc, "metrics": metrics, "evals": state["evals"], "history": state["history"]},
                   os.path.join(args.save_dir, "results.json"))
        return {**metrics, "best": best}


def evaluate_saved(path, data, num_eval=2, epochs=300, batch_size=256, seed=0, real_start=False) -> dict:
    """Re-evaluate a saved distilled.pt / best.pt on another copy of its data (e.g. a different test split):
    fresh networks of its arch, MTT's recipe with the learned lr and loss weights, on `data`'s val and test
    split. With real_start, also the real images the set started from (its init_indices) at lr_teacher."""
    saved = load_checkpoint(path)
    device, info, cfg = data.x_train.device, data.info, saved["config"]
    space = dd.TrainingSpace.of_record(saved, ZCA.from_state(saved["zca"]) if saved.get("zca") else None, device)
    loaders = eval_loaders(space, data)
    strategy = cfg["dsa_strategy"] if cfg.get("dsa", True) else None
    labels = saved["labels"].to(device)
    weights = saved["loss_weights"].to(device) if cfg.get("eval_weighted", True) and cfg.get("lr_weights") else None
    out = {"distilled": dd.evaluate_synset(cfg["model"], info, saved["images_train_space"].to(device), labels, weights,
                                           saved["lr"], *loaders, num_eval, epochs, batch_size, strategy, seed)}
    if real_start and saved.get("init_indices") is not None:
        rows = torch.as_tensor(saved["init_indices"], device=device)
        out["real_start"] = dd.evaluate_synset(cfg["model"], info, space(data.x_train.index_select(0, rows)),
                                               labels, None, cfg["lr_teacher"], *loaders, num_eval, epochs,
                                               batch_size, strategy, seed)
    return out

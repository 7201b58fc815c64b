"""Run set-up shared by main_forget.py, main_forget_distill.py and main_rum.py: the flags (the seeds' spellings
included, docs/seed_commands.md), the original model (our model.pt, or foreign weights imported on the fly) and
its data (with the split it was trained on), and each method's hyperparameters."""
import argparse
import glob
import os

import numpy as np

import models
from datasets import get_info, load_data
from forget_sets import forget_set
from unlearn.common import METHODS, resolve
from utils import (UsageError, add_bool, add_forget_args, add_seed_args, default_save_dir, get_device, load_checkpoint,
                   parse_floats)


def _at_least_one(text):
    """argparse type of a count: a bad value becomes one `error: argument --flag: ...` line (utils.Parser)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_unlearn_args(p):
    g = p.add_argument_group("model and data")
    g.add_argument("--mask", "--model_path", dest="model_path", default=None,
                   help="the original model to unlearn (`--mask` is the seeds' name for it): a model.pt, or foreign "
                        "weights (a state dict, e.g. the HF resnet18_cifar10 file or an Unlearn-Sparse checkpoint) "
                        "built as --arch for --dataset (default resnet18, cifar10) on the seeds' split (val10, seed 1) "
                        "and recorded as imported; default: main_train.py's default output for --dataset/--arch/--seed")
    g.add_argument("--dataset", default=None, help="must match the model's dataset (default: the model's)")
    g.add_argument("--arch", default=None, help="must match the model's architecture (default: the model's)")
    g.add_argument("--norm_mean", default=None, help="foreign weights: normalisation mean, e.g. 0.4914,0.4822,0.4465 "
                   "(default: their normalize.mean buffer, else the dataset's); a model.pt carries its own")
    g.add_argument("--norm_std", default=None, help="foreign weights: normalisation std, e.g. 0.2023,0.1994,0.2010 "
                   "(the HF model's; default: their normalize.std buffer, else the dataset's)")
    g.add_argument("--data_path", "--data", dest="data_path", default="./data", help="dataset folder")
    g.add_argument("--split_seed", type=int, default=None,
                   help="default: the split the model was trained on; another one needs --force")
    g.add_argument("--split", default=None,
                   help="val10 or regun (default: the split the model was trained on; another one is refused)")
    add_bool(g, "--force", False, "allow a split seed other than the model's")
    add_forget_args(p)
    g = p.add_argument_group("unlearning")
    g.add_argument("--unlearn", default=None,
                   help="method name (see unlearn.METHODS), method@preset for a published setting (e.g. scrub@rum), "
                        "or none for the original")
    g.add_argument("--unlearn_lr", type=float, default=None, help="learning rate (default: the method's)")
    g.add_argument("--unlearn_epochs", type=int, default=None, help="epochs (default: the method's)")
    g.add_argument("--alpha", type=float, default=None,
                   help="NG's retain weight / l1-sparse's l1 strength / FF's noise scale / IU's step size "
                        "(default: the method's)")
    g.add_argument("--mask_ratio", type=float, default=None, help="SalUn: fraction of salient weights (0.5)")
    g.add_argument("--mask_path", "--path", dest="mask_path", default=None,
                   help="SalUn: reuse a saved saliency mask (--path: RUM's name)")
    g.add_argument("--no_l1_epochs", type=int, default=0, help="l1-sparse: final epochs without the l1 term")
    g.add_argument("--variant", default=None,
                   help="a published variant of the method, named in its file's docstring (e.g. legacy: the released "
                        "code's behaviour for SalUn, BE, FF, IU, A_AMU; default: the preset's, else default)")
    g = p.add_argument_group("method hyperparameters (default: the method's or its preset's; see unlearn/*.py)")
    g.add_argument("--epoch_over", default=None,
                   help="NG: an epoch is one pass over the retain set, forget batches cycled alongside (retain: "
                        "SCRUB/RUM) or one pass over the forget set with retain batches alongside (forget: ReGUn)")
    g.add_argument("--mask_variant", default=None,
                   help="SalUn saliency mask: default (largest |summed grad| at the original, eval mode; SalUn since "
                        "b874ee9), first_commit (SalUn's 9576623, alias legacy: train mode, |grad| per batch summed "
                        "while taking ascent steps, smallest kept), rum (RUM's generate_mask.py = SalUn's bc74947: "
                        "eval mode, |summed grad| while taking ascent steps, smallest kept) or regun (ReGUn's: as "
                        "default on the un-augmented forget set, per-sample mean)")
    g.add_argument("--mask_lr", type=float, default=None,
                   help="SalUn masks first_commit/rum: lr of the SGD ascent step taken while accumulating (0.01, "
                        "generate_mask.py's default --unlearn_lr, which both READMEs leave unset)")
    g.add_argument("--rl_loop", default=None,
                   help="RL/SalUn epoch: sequential (a random-label pass over forget, then a pass over retain; SalUn's "
                        "CIFAR-10 loop), joint (one random label per forget sample for the epoch, one shuffled pass "
                        "over forget + retain; SalUn's CIFAR-100 loop, RUM's RL) or paired (one forget and one retain "
                        "batch per step until the shorter ends, loss (1 - w_r) CE_forget + w_r CE_retain; ReGUn's "
                        "SalUn)")
    g.add_argument("--rl_labels", default=None,
                   help="RL/SalUn random labels: uniform (over all classes, the true one included; SalUn, RUM) or "
                        "not_true (over the other classes; ReGUn)")
    add_bool(g, "--retain_subset", None, "FT, l1-sparse: train on a fixed random retain subset as large as the forget "
             "set (ReGUn's Finetune and l1-sparse); not given: the method's or preset's, else False")
    g.add_argument("--l1_schedule", default=None,
                   help="l1-sparse weight per epoch e of E: sparse (alpha (1 - e / (E - no_l1_epochs)); "
                        "Unlearn-Sparse, RUM) or regun (alpha (2 - 2 (e + 1) / E); ReGUn's linear_decay)")
    g.add_argument("--rate", type=float, default=None,
                   help="FT_prune_bi: fraction of the conv weights left at its start that are pruned by its end (0.95)")
    add_bool(g, "--random_prune", None, "FT_prune_bi: prune a seeded random choice of the remaining conv weights "
             "instead of the smallest by L1 magnitude (Unlearn-Sparse's --random_prune); not given: False")
    g.add_argument("--ssd_importance", default=None,
                   help="SSD importance: batch (squared batch-mean gradients, the SSD code) or sample "
                        "(per-sample squared gradients, ReGUn); their scales differ, so tune --ssd_alpha per estimator")
    g.add_argument("--ssd_alpha", type=float, default=None,
                   help="SSD selection: dampen parameters whose forget importance > alpha x overall importance (10)")
    g.add_argument("--ssd_lambda", type=float, default=None,
                   help="SSD dampening: multiply by min(lambda x overall / forget importance, 1) (1)")
    g.add_argument("--kl_weight", "--beta", dest="kl_weight", type=float, default=None,
                   help="SCRUB: weight of the KL to the teacher on retain (--beta: RUM's name; SCRUB's code calls "
                        "it alpha)")
    g.add_argument("--ce_weight", "--gamma", dest="ce_weight", type=float, default=None,
                   help="SCRUB: weight of the CE on retain (--gamma: RUM's and SCRUB's name)")
    g.add_argument("--msteps", type=int, default=None, help="SCRUB: epochs (1-based) that start with a max step")
    g.add_argument("--kd_T", type=float, default=None,
                   help="SCRUB: distillation temperature; ReGUn: temperature of the target and the student (1)")
    g.add_argument("--lr_decay_epochs", default=None,
                   help="SCRUB: comma list of epochs after which the lr is multiplied by 0.1 ('' = never)")
    g.add_argument("--forget_batch_size", type=int, default=None,
                   help="SCRUB: forget minibatch size (default: --batch_size)")
    g.add_argument("--bs_eps", type=float, default=None, help="BS: FGSM bound in pixel space (0.1)")
    g.add_argument("--iu_damping", type=float, default=None, help="IU: damping added to the Hessian (H + d I)")
    g.add_argument("--iu_cg_steps", type=int, default=None, help="IU: conjugate-gradient iterations")
    g.add_argument("--iu_hvp_samples", type=int, default=None,
                   help="IU: retain samples (first ones, fixed) whose mean loss defines the Hessian")
    g.add_argument("--amun_eps", type=float, default=None,
                   help="Amun: first L2 radius (in the model's normalised input space), doubled per failed round")
    g.add_argument("--amun_steps", type=int, default=None, help="Amun: PGD steps per round (50)")
    g.add_argument("--amun_rounds", type=int, default=None, help="Amun: radius doublings at most (6)")
    g.add_argument("--amun_cache", default=None,
                   help="Amun: folder for the cached adversarial sets (default: the run's --save_dir)")
    g.add_argument("--lur_sparsity", type=float, default=None,
                   help="LUR: saliency quantile above which weights are re-initialised (auto: 0.97 for 10 classes)")
    g.add_argument("--lur_inner_lr", type=float, default=None, help="LUR: step size of the differentiable inner step")
    g.add_argument("--amu_reg", type=float, default=None,
                   help="weight of A-AMU's MMD between forget and unseen (held-out) loss scores: A_AMU's lambda (34); "
                        "FT's add-on (0 = off); needs --split regun")
    g.add_argument("--amu_k", type=float, default=None, help="A-AMU: sharpness k of the soft rank (2)")
    g.add_argument("--amu_kappa", type=float, default=None, help="A-AMU: clamp of the normal scores (60)")
    g.add_argument("--amu_ratio", type=int, default=None,
                   help="A-AMU: forget and unseen batch size as a multiple of the retain batch (4)")
    g.add_argument("--regun_selector", default=None,
                   help="ReGUn: held-out images per forget batch: class_informed (its class histogram; the paper's), "
                        "uniform (a random batch; ReGUn's released config) or feature_1nn (nearest in feature space)")
    g.add_argument("--regun_aggregation", default=None,
                   help="ReGUn: one target per batch: mean_probs (mean of the softmaxes) or mean_logits")
    g.add_argument("--retain_weight", type=float, default=None,
                   help="ReGUn: weight w_r of the retain CE, the forget KL gets 1 - w_r; RL/SalUn --rl_loop paired: "
                        "the same for the retain CE and the random-label forget CE (0.5)")
    g.add_argument("--batch_size", type=int, default=None, help="minibatch size (256; retrain: the original's)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (0.9; retrain: the original's)")
    g.add_argument("--weight_decay", type=float, default=None,
                   help="SGD weight decay (5e-4; retrain: the original's)")
    add_bool(g, "--no_aug", None, "no crop+flip on retain/forget batches (--no_aug False overrides a preset's); "
             "not given: the method's or preset's, else False")
    g = p.add_argument_group("evaluation and output")
    g.add_argument("--retrain_result", default=None,
                   help="a retrain results.json: adds avg_gap, ToW, ToW_MIA to it (and, with its outputs.npz beside "
                        "it, JS divergences and the entropy gap; with --references, GapAvg)")
    g.add_argument("--references", type=_at_least_one, nargs="?", const=4, default=None, metavar="K",
                   help="RMIA: train (or reuse from --reference_cache) K reference models on the retain set with "
                        "the original's recipe, seeds seed+1..seed+K (bare flag: 4, ReGUn's count)")
    g.add_argument("--reference_cache", default="runs/references",
                   help="folder of cached reference models, one subfolder per content hash of data, split, forget "
                        "set, recipe, arch and seeds")
    g.add_argument("--mia_jobs", type=int, default=5, help="parallel processes for the five SVC MIAs")
    g.add_argument("--save_model", action="store_true", help="also write the unlearned model.pt")
    g.add_argument("--amp", default="auto", help="bf16 autocast: auto (on for CUDA), bf16 or off")
    g.add_argument("--dry_run", action="store_true",
                   help="check the flags, the model, the data and the forget set, print what would run, write nothing")
    g = add_seed_args(p)
    g.add_argument("--mem_proxy", default=None,
                   help="RUM's proxy selection: --mem groups by this proxy (= --proxy NAME) read from --proxy_file, "
                        "by default the file beside the model: events.npz (main_train.py --record_events) for "
                        "confidence, max_conf, entropy, bi_acc; proxies.npz (python -m forget_sets.memorization "
                        "--compute) for ho_ret, curvature")
    g.add_argument("--epochs", type=int, default=None,
                   help="the original model's training epochs in the seeds (RUM finds its checkpoint by them): no "
                        "effect here, the model is --mask; unlearning epochs are --unlearn_epochs")
    g.add_argument("--lr", type=float, default=None,
                   help="the original model's learning rate in the seeds: no effect here; the unlearning lr is "
                        "--unlearn_lr")


def method_keys(parser) -> set:
    """Names of the flags a method reads (the `unlearning` and `method hyperparameters` groups): what a RUM
    plan step may set."""
    return {a.dest for g in parser._action_groups if g.title.startswith(("unlearning", "method hyperparameters"))
            for a in g._group_actions}


def load_original(args):
    """(model, record, data, device) with the dataset and split the model was trained on. `args`: add_unlearn_args'
    flags (condense.py's subset: the flags it lacks count as not given)."""
    for flag in ("arch", "norm_mean", "norm_std", "mem_proxy"):
        setattr(args, flag, getattr(args, flag, None))
    device = get_device(args.device)
    args.model_path = args.model_path or default_original(args)
    obj = load_checkpoint(args.model_path)
    if models.is_model_record(obj):
        model, record = models.model_from_record(obj, args.model_path), obj
        for flag, value, own in (("--norm_mean", args.norm_mean, obj.get("norm_mean")),
                                 ("--norm_std", args.norm_std, obj.get("norm_std"))):
            if value is not None and (own is None or not np.allclose(parse_floats(value, flag, len(own)), own)):
                raise UsageError(f"{flag}: the model.pt carries its normalisation ({own}); the flag is for foreign "
                                 "weights")
    else:
        model, record = import_original(args, obj)
    model = model.to(device)
    dataset = record.get("dataset")
    if dataset is None:
        raise UsageError(f"--mask: '{args.model_path}' does not say which dataset it was trained on")
    if args.dataset is not None and get_info(args.dataset).name != dataset:
        raise UsageError(f"--dataset: the model was trained on {dataset}, not {get_info(args.dataset).name}")
    if args.arch is not None and models.canonical_arch(args.arch) != record["arch"]:
        raise UsageError(f"--arch: the model is a {record['arch']}, not {args.arch}")
    model_split = record.get("split") or {}
    model_seed, split = model_split.get("seed"), model_split.get("name", "val10")
    if getattr(args, "split", None) not in (None, split):
        raise UsageError(f"--split: the model was trained on the {split} split, not {args.split} (a model cannot "
                         "be unlearned on a split whose held-out or val images it has trained on)")
    args.split = split
    if args.split_seed is None:
        args.split_seed = 1 if model_seed is None else model_seed
    elif model_seed is not None and args.split_seed != model_seed and not args.force:
        raise UsageError(f"--split_seed: the model was trained on split seed {model_seed}, not "
                         f"{args.split_seed} (another split would put its training images in val; --force to insist)")
    args.dataset = dataset
    memorisation_source(args, dataset)
    data = load_data(dataset, args.data_path, device, args.split_seed, split)
    return model, record, data, device


def import_original(args, obj):
    """Foreign weights as the original: built from --arch/--dataset (the seeds' defaults resnet18, cifar10), on
    the seeds' split (val10, seed 1) unless --split/--split_seed say otherwise; recorded as imported. The same
    conversion as scripts/import_checkpoint.py (models.import_weights)."""
    info = get_info(args.dataset or "cifar10")
    arch = models.canonical_arch(args.arch or "resnet18")
    mean = parse_floats(args.norm_mean, "--norm_mean", info.channels)
    std = parse_floats(args.norm_std, "--norm_std", info.channels)
    model, record = models.import_weights(obj, arch, info, mean, std, source=f"--mask '{args.model_path}'")
    record.update(split={"name": args.split or "val10", "seed": 1 if args.split_seed is None else args.split_seed},
                  train_on=None, imported=args.model_path)
    args.imported = args.model_path  # in results.json's config
    print(f"imported {args.model_path} as {arch} for {info.name} (mean {record['norm_mean']}, std "
          f"{record['norm_std']}; split {record['split']['name']}, seed {record['split']['seed']})", flush=True)
    return model, record


def default_original(args) -> str:
    """No --mask: the model.pt main_train.py writes by default for --dataset/--arch/--seed (RUM's scripts, too,
    find the original by its name)."""
    dataset, arch = get_info(args.dataset or "cifar10").name, models.canonical_arch(args.arch or "resnet18")
    path = os.path.join(default_save_dir("main_train", dataset, arch, "train", args.seed), "model.pt")
    if not os.path.isfile(path):
        raise UsageError(f"--mask: give the original model; main_train.py's default output {path} is not there "
                         f"either (python main_train.py --dataset {dataset} --arch {arch} --seed {args.seed} makes it)")
    print(f"--mask not given: unlearning {path} (main_train.py's default output)", flush=True)
    return path


def newest_finished(pattern: str):
    """The newest file matching the glob `pattern` whose folder holds results.json (a finished run), or None."""
    done = [p for p in glob.glob(pattern) if os.path.isfile(os.path.join(os.path.dirname(p), "results.json"))]
    return max(done, key=lambda p: os.path.getmtime(os.path.join(os.path.dirname(p), "results.json")), default=None)


RUM_SCORE_FILES = {"cifar10": "estimates_results_woShuffle.npz", "cifar100": "cifar100_infl_matrix.npz"}
EVENT_PROXIES = ("confidence", "max_conf", "entropy", "bi_acc")  # in events.npz; ho_ret, curvature in proxies.npz


def memorisation_source(args, dataset):
    """RUM's spellings of the difficulty flags: --mem_proxy NAME = --proxy NAME with the proxy file beside the model;
    --mem (--forget_group) without scores = RUM's score file (in . or --data_path) or estimate_mem.py's newest
    finished output for the dataset."""
    if args.forget_group and args.es_group is not None:
        raise UsageError("--group_index: give --mem (a memorisation group) or --group_index (an ES group), not both "
                         "(RUM's code then uses neither and forgets N random samples: --class_to_replace -1 "
                         "--num_indexes_to_replace N)")
    if args.mem_proxy:
        args.proxy = args.mem_proxy
        name = "events.npz" if args.mem_proxy in EVENT_PROXIES else "proxies.npz"
        args.proxy_file = args.proxy_file or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), name)
        if not os.path.isfile(args.proxy_file):
            make = ("main_train.py --record_events (the original's training)" if name == "events.npz" else
                    f"python -m forget_sets.memorization --mask {args.model_path} --compute {args.mem_proxy}")
            raise UsageError(f"--mem_proxy: no {args.proxy_file}; make it with {make}, or give --proxy_file")
    if not args.forget_group or args.mem_scores or args.proxy_file:
        return
    rum = RUM_SCORE_FILES.get(dataset)
    found = [p for p in ([rum, os.path.join(args.data_path, rum)] if rum else []) if os.path.isfile(p)]
    args.mem_scores = (found[0] if found else
                       newest_finished(os.path.join("runs", "estimate_mem", f"{dataset}-*", "mem_scores.npz")))
    if not args.mem_scores:
        rum_hint = f" (RUM's {rum})" if rum else ""
        raise UsageError(f"--mem: no memorisation scores for {dataset}: give --mem_scores FILE{rum_hint}, estimate "
                         f"them (python estimate_mem.py --dataset {dataset}), or use a proxy (--mem_proxy confidence "
                         "after main_train.py --record_events)")
    print(f"--mem_scores not given: using {args.mem_scores}", flush=True)


def dry_run(args, data, cfg) -> None:
    """--dry_run: select the forget set (cheap) and print what would run; nothing is trained or written."""
    idx, forget = forget_set(args, data)
    if idx is None or len(idx) == 0:
        raise UsageError("forget set is empty: give --class_to_replace and/or --num_indexes_to_replace, "
                         "or --forget_indices")
    hyper = f", lr {cfg.unlearn_lr}, {cfg.unlearn_epochs} epoch(s)" if cfg.unlearn_epochs else ""
    print(f"dry run: {cfg.unlearn}{hyper} on {forget['n']} {forget['kind']} forget samples of {args.model_path} "
          f"({data.info.name}, split {args.split} seed {args.split_seed}); nothing written")


def is_classwise(forget_idx, data) -> list:
    """The forgotten classes if the forget set is every train-split sample of the classes it touches."""
    y = data.y_train_np
    classes = sorted(set(y[forget_idx].tolist()))
    whole = data.train_idx[np.isin(y[data.train_idx], classes)]
    return classes if len(whole) == len(forget_idx) else []


SEED_RECIPE = {"epochs": 182, "lr": 0.1, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4,
               "scheduler": "multistep", "decreasing_lr": "91,136", "warmup": 0}
UNLEARN_RECIPE = {"batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "constant",
                  "decreasing_lr": "", "warmup": 0}


CHOICES = {"ssd_importance": ("batch", "sample"), "epoch_over": ("retain", "forget"),
           "mask_variant": ("default", "first_commit", "legacy", "rum", "regun"),
           "rl_loop": ("sequential", "joint", "paired"), "rl_labels": ("uniform", "not_true"),
           "l1_schedule": ("sparse", "regun"), "regun_selector": ("class_informed", "uniform", "feature_1nn"),
           "regun_aggregation": ("mean_probs", "mean_logits")}
# What a flag that neither the user, nor the method, nor its preset sets falls back to.
FALLBACK = {"variant": "default", "no_aug": False}


def fill_unset(cfg, values):
    """cfg with each key of `values` set where cfg leaves it None (not given)."""
    for key, value in values.items():
        if getattr(cfg, key, None) is None:
            setattr(cfg, key, value)
    return cfg


def method_config(args, record):
    """The method and its hyperparameters: the user's flags, else the preset's, else the method's published
    defaults, else FALLBACK; retrain repeats the original model's recipe."""
    if args.unlearn is None:
        raise UsageError("--unlearn: choose a method: none (evaluate the original) or one of "
                         + ", ".join(METHODS))
    if str(args.unlearn).lower() == "none":
        return None, fill_unset(argparse.Namespace(**{**vars(args), **UNLEARN_RECIPE}), FALLBACK)
    method, preset, defaults = resolve(args.unlearn)
    if getattr(args, "mask_path", None) and method.name != "SalUn":
        raise UsageError(f"--mask_path: {method.name} uses no saliency mask (RL with a saliency mask is SalUn: "
                         f"--unlearn SalUn --mask_path {args.mask_path})")
    cfg = argparse.Namespace(**vars(args))
    cfg.unlearn, cfg.preset = method.name, preset  # `--unlearn scrub@rum` -> SCRUB with the rum preset
    fill_unset(fill_unset(cfg, defaults), FALLBACK)  # the user's flags, else the preset's and method's, else ours
    if cfg.variant not in method.variants:
        raise UsageError(f"--variant: {method.name} has variants {', '.join(method.variants)}, not '{cfg.variant}'")
    for key, allowed in CHOICES.items():
        value = getattr(cfg, key, None)
        if value is not None and value not in allowed:
            raise UsageError(f"--{key}: '{value}' is not one of {', '.join(allowed)}")
    # Unlearning runs use the seeds' SGD at a constant lr; retrain repeats the original model's whole recipe
    # (Unlearn-Sparse's defaults when model.pt does not carry one, e.g. imported weights).
    recipe = {**SEED_RECIPE, **(record.get("recipe") or {})} if method.name == "retrain" else UNLEARN_RECIPE
    for key, flag in (("batch_size", "batch_size"), ("momentum", "momentum"), ("weight_decay", "weight_decay"),
                      ("epochs", "unlearn_epochs"), ("lr", "unlearn_lr")):
        if getattr(cfg, flag) is None:
            setattr(cfg, flag, recipe.get(key))
    cfg.scheduler, cfg.decreasing_lr, cfg.warmup = recipe["scheduler"], recipe["decreasing_lr"], recipe["warmup"]
    if not method.iterative:  # one-shot edits: no epochs, no learning rate
        return method, cfg
    if cfg.unlearn_epochs is None or cfg.unlearn_epochs < 1:
        raise UsageError(f"--unlearn_epochs: must be at least 1, got {cfg.unlearn_epochs}")
    if cfg.unlearn_lr is None or cfg.unlearn_lr <= 0:
        raise UsageError(f"--unlearn_lr: must be positive, got {cfg.unlearn_lr}")
    return method, cfg

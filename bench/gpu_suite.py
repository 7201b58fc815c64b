"""Every GPU figure the project owes, from one command: a few minutes of one H100/H200 in, one table out.

    python -m bench.gpu_suite                          # all parts, <= 8 min, writes docs/results/gpu_<device>_<date>.md
    python -m bench.gpu_suite --parts distill,compile  # some parts only (names below)
    python -m bench.gpu_suite --smoke --out /tmp/gs    # every part at toy size on a CPU, well under a minute

What it measures (timing on random CIFAR-shaped tensors made on the device: no files, no network):
  train       ResNet-18 train epoch of main_train's loop, 45k images, bs 256: fp32, bf16 + channels_last
  compile     the same with torch.compile, in a child process capped at its own time (may be 'skipped')
  forget      main_forget.py's run, built through its library calls (unlearn.run): FT 10 epochs on a 40.5k
              retain set + the full evaluation (UA, RA, TA, val, 5 SVC MIAs, threshold MIAs), timed apart;
              data loading is not included (the tensors are already on the device)
  expert      ConvNetD3 expert epoch with DSA, 50k images (buffer.py's loop)
  distill     seconds per distillation iteration and peak CUDA memory, ipc 1/syn_steps 50, ipc 10/30,
              ipc 50/30, each for grad_mode exact, tesla, unroll (weighted, as bench/distill_iter.py)
  condense    DM seconds per iteration (ipc 10, 50) and Blend's offline stage + one request (ipc 1000)
  loader      DeviceLoader images/s, with crop+flip and plain
With real CIFAR-10 (<data_path>/cifar10.npz: see docs/results/gpu_suite.md), also
  real_train    ResNet-18 trained for as many epochs as fit in ~2 min: val accuracy, TA (JPEG test)
  real_distill  a tiny ZCA buffer (2 experts) and ~40 s of ipc-1 distillation: real start vs distilled

Every part has a time cap and the suite an overall --budget_s: a part that would not fit is skipped with the
reason, a part that runs past its cap is stopped there, a part that raises is reported as 'failed: <line>',
and the suite goes on. Each row shows ours, the anchor of ../shared/reference/anchors_gpu.md (reference
code or plain-PyTorch ceilings on an H100, torch 2.11) where one exists, and ours / anchor. GPU timings are
CUDA-synchronized (utils.Timer) after a warm-up. Writes gpu_<device>_<date>.md and .json into --out.
"""
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch

import models
import training
from bench.distill_iter import bench as distill_bench
from bench.loader import images_per_second
from bench.train_epoch import seconds_per_epoch
from datasets import ZCA, Data, DeviceLoader, get_info, load_data, make_split, train_augment
from distillation import condensers as cd
from distillation import experts
from distillation import matching as dd
from training import augment
from utils import (Timer, UsageError, get_device, git_commit, make_parser, prepare_save_dir, run_cli,
                   write_json, write_text)

ANCHORS = "../shared/reference/anchors_gpu.md (reference code and plain-PyTorch ceilings, H100 80GB, torch 2.11)"

# Sizes of every part. FULL is what the figures mean; SMOKE shrinks each to seconds on a 2-core CPU.
FULL = dict(
    train_n=45000, train_arch="resnet18", batch=256, timed_epochs=2,  # main_train's epoch (45k train split)
    ft_train=50000, ft_test=10000, ft_forget=4500, ft_epochs=10, ft_arch="resnet18", mia_jobs=5,
    expert_n=50000, expert_arch="ConvNetD3",
    distill_arch="ConvNetD3", distill_settings=((1, 50), (10, 30), (50, 30)), distill_iters=3,
    dm_arch="convnetd3", dm_ipcs=(10, 50), dm_iters=10, blend_ipc=1000, blend_iters=12, cond_n=50000,
    loader_n=50000, loader_epochs=3,
    real_arch="resnet18", real_train_s=120.0, real_lr=0.1, real_subset=None,
    rd_arch="ConvNetD3", rd_zca=True, rd_experts=2, rd_expert_epochs=4, rd_syn_steps=50, rd_match_epochs=2,
    rd_max_start=2, rd_lr_img=1000.0, rd_lr_lr=1e-7, rd_lr_teacher=0.01, rd_distill_s=40.0, rd_max_its=10**6,
    rd_eval_nets=2, rd_eval_epochs=300,
    # part: (cap, least time worth starting it with), seconds
    caps=dict(train=60, compile=150, forget=150, expert=30, distill=100, condense=60, loader=20,
              real_train=160, real_distill=100),
    mins=dict(train=10, compile=60, forget=30, expert=5, distill=15, condense=10, loader=3,
              real_train=40, real_distill=40),
)
SMOKE = {**FULL, **dict(
    train_n=32, train_arch="convnetd1", batch=32, timed_epochs=1,
    ft_train=120, ft_test=30, ft_forget=10, ft_epochs=1, ft_arch="convnetd1", mia_jobs=1,
    expert_n=32, expert_arch="ConvNetD1",
    distill_arch="ConvNetD1", distill_settings=((1, 2), (1, 1), (2, 1)), distill_iters=1,
    dm_arch="convnetd1", dm_ipcs=(1, 2), dm_iters=1, blend_ipc=2, blend_iters=1, cond_n=100,
    loader_n=512, loader_epochs=1,
    real_arch="convnetd1", real_train_s=1.0, real_subset=200,  # train images (val, test: a quarter of it)
    rd_arch="ConvNetD1", rd_zca=False, rd_experts=1, rd_expert_epochs=1, rd_syn_steps=2, rd_match_epochs=1,
    rd_max_start=1, rd_lr_img=100.0, rd_lr_lr=1e-5, rd_distill_s=1.0, rd_max_its=3, rd_eval_nets=1, rd_eval_epochs=2,
    caps={k: 60 for k in FULL["caps"]}, mins={k: 0 for k in FULL["mins"]},
)}
PART_NAMES = ("train", "expert", "distill", "condense", "loader", "forget", "compile", "real_train", "real_distill")
RESERVE_S = 5.0  # kept back from the budget for writing the report


def count(n: int) -> str:
    """45000 -> '45k', 40500 -> '40.5k', 64 -> '64'."""
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def figures(hp) -> list:
    """(part, id, label, unit, anchor, anchor source) of every row, in table order."""
    epoch = f"{hp['train_arch']} train epoch, {count(hp['train_n'])} images"
    rows = [
        ("train", "train_fp32_s", f"{epoch}, fp32 eager, bs {hp['batch']}", "s",
         45000 / 18600, "ceiling fp32/TF32 eager bs256: 18.6k img/s; Unlearn-Sparse's main_imp.py: 10.3-11.9 s"),
        ("train", "train_bf16_s", f"{epoch}, bf16 + channels_last", "s",
         45000 / 28200, "ceiling bf16 + channels_last eager bs256: 28.2k img/s"),
        ("compile", "train_compile_s", f"{epoch}, bf16 + channels_last + torch.compile", "s",
         0.63, "ceiling bf16 + channels_last + compile at bs 512: 0.63 s per 45k"),
    ]
    retain = hp["ft_train"] * 9 // 10 - hp["ft_forget"]
    rows += [
        ("forget", "ft_epoch_s", f"FT epoch, retain {count(retain)}, {hp['ft_arch']} (main_forget.py)", "s",
         9.7, "Unlearn-Sparse main_forget.py, 9.7 s/epoch"),
        ("forget", "ft_train_s", f"FT {hp['ft_epochs']} epochs: training (RTE)", "s",
         9.7 * hp["ft_epochs"], f"{hp['ft_epochs']} x 9.7 s/epoch"),
        ("forget", "ft_eval_s", "FT evaluation: UA, RA, TA, val, 5 SVC MIAs, threshold MIAs", "s", None, ""),
        ("forget", "ft_total_s", "FT run: training + evaluation + writing outputs (no data loading)", "s",
         181 + 9.7 * (hp["ft_epochs"] - 2),
         "Unlearn-Sparse's 2-epoch run took 181 s incl. loading; + 9.7 s per further epoch"),
        ("expert", "expert_epoch_s", f"{hp['expert_arch']} expert epoch, {count(hp['expert_n'])} images, DSA", "s",
         2.0, "MTT buffer.py 2.0-3.1 s/expert-epoch (incl. a test evaluation)"),
    ]
    mtt = {(1, 50): (0.53, 2.4), (10, 30): (0.38, 9.8), (50, 30): (0.96, 44.6)}
    tesla = {(1, 50): (0.79, 1.0), (10, 30): (0.60, 1.7), (50, 30): (1.17, 4.7)}
    for mode in ("exact", "tesla", "unroll"):
        for full, (ipc, steps) in zip(FULL["distill_settings"], hp["distill_settings"]):
            ref, src = (tesla, "TESLA distill.py") if mode == "tesla" else (mtt, "MTT distill.py")
            what = f"distill {mode}, ipc {ipc}, syn_steps {steps}"
            key = f"distill_{mode}_ipc{full[0]}"
            rows += [("distill", f"{key}_s", f"{what}: s/iteration", "s", ref[full][0], src),
                     ("distill", f"{key}_gb", f"{what}: peak CUDA memory", "GB", ref[full][1], src)]
    for full, ipc in zip(FULL["dm_ipcs"], hp["dm_ipcs"]):
        rows.append(("condense", f"dm_ipc{full}_s", f"DM iteration, ipc {ipc}, {count(hp['cond_n'] * 9 // 10)} "
                     "train images", "s", None, ""))
    rows += [
        ("condense", "blend_offline_s", f"Blend offline stage, ipc {hp['blend_ipc']} ({hp['blend_iters']} its)", "s",
         None, ""),
        ("condense", "blend_request_s", "Blend request (random 10% forget set)", "s", None, ""),
        ("loader", "loader_aug_ips", f"DeviceLoader, {count(hp['loader_n'])} images, crop+flip", "img/s", None, ""),
        ("loader", "loader_plain_ips", f"DeviceLoader, {count(hp['loader_n'])} images, plain", "img/s", None, ""),
        ("real_train", "real_epochs", f"real CIFAR-10: {hp['real_arch']} epochs in ~{hp['real_train_s']:g} s", "epochs",
         None, ""),
        ("real_train", "real_epoch_s", "real CIFAR-10: seconds per epoch", "s", None, ""),
        ("real_train", "real_val_acc", "real CIFAR-10: val accuracy", "%", None, ""),
        ("real_train", "real_test_acc", "real CIFAR-10: TA (JPEG test)", "%", None, ""),
        ("real_distill", "rd_buffer_s", f"real ipc 1: buffer, {hp['rd_experts']} x {hp['rd_expert_epochs']} epochs",
         "s", None, ""),
        ("real_distill", "rd_iters", f"real ipc 1: distillation iterations in ~{hp['rd_distill_s']:g} s", "its",
         None, ""),
        ("real_distill", "rd_s_per_it", "real ipc 1: s/iteration", "s", None, ""),
        ("real_distill", "rd_start_val", "real ipc 1: real start, val accuracy", "%", None, ""),
        ("real_distill", "rd_start_test", "real ipc 1: real start, TA (JPEG test)", "%", None, ""),
        ("real_distill", "rd_dist_val", "real ipc 1: distilled, val accuracy", "%", None, ""),
        ("real_distill", "rd_dist_test", "real ipc 1: distilled, TA (JPEG test)", "%", None, ""),
    ]
    return rows


# ---------------------------------------------------------------------------------------------------------
# Bookkeeping: the rows, the clock, the per-part cap

class Report:
    def __init__(self, hp, smoke):
        self.smoke = smoke
        self.rows = {fid: dict(id=fid, part=part, label=label, unit=unit, value=None, anchor=anchor,
                               anchor_source=src, ratio=None, status="pending", note="")
                     for part, fid, label, unit, anchor, src in figures(hp)}

    def put(self, fid, value, note=""):
        row = self.rows[fid]
        if not math.isfinite(value):
            self.skip([fid], f"failed: not a finite number ({note})", "failed")
            return
        row.update(value=float(value), status="measured", note=note)
        if row["anchor"] and not self.smoke:
            row["ratio"] = float(value) / row["anchor"]
        print(f"  {row['label']}: {fmt(row['value'], row['unit'])}{'  (' + note + ')' if note else ''}", flush=True)

    def skip(self, ids, reason, status="skipped"):
        """Mark the rows among ids that have no value yet."""
        for fid in ids:
            if self.rows[fid]["status"] == "pending":
                self.rows[fid].update(status=status, note=reason)

    def of_part(self, part):
        return [fid for fid, r in self.rows.items() if r["part"] == part]


class OverCap(BaseException):
    """Raised by the alarm when a part runs past its cap (BaseException: library `except Exception` lets it by)."""


@contextlib.contextmanager
def hard_cap(seconds):
    """Interrupt the block after `seconds` (SIGALRM; between Python bytecodes, so a running kernel finishes)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise OverCap()
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def fmt(value, unit) -> str:
    if value is None:
        return "-"
    if unit == "img/s":
        return f"{value:,.0f} img/s"
    if unit in ("epochs", "its"):
        return f"{value:.0f}"
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "GB":
        return f"{value:.2f} GB"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def random_data(n_train, n_test, device, seed=0) -> Data:
    """CIFAR-10-shaped random uint8 images with balanced labels, split as main_train splits them."""
    info = get_info("cifar10")
    g = torch.Generator(device=device).manual_seed(seed)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
    labels = lambda n: (torch.arange(n, device=device) % 10)[torch.randperm(n, device=device, generator=g)]
    y_train = labels(n_train)
    parts = make_split(y_train.cpu().numpy(), 10, 1)
    return Data(info, images(n_train), y_train, images(n_test), labels(n_test), parts["train"], parts["val"], 1,
                "val10", parts["heldout"])


# ---------------------------------------------------------------------------------------------------------
# The parts. Each takes the run's state `s` and records figures in s.report as it measures them.

def part_train(s):
    hp, dev, cuda = s.hp, s.device, s.device.type == "cuda"
    for fid, amp, cl in (("train_fp32_s", False, False), ("train_bf16_s", cuda, True)):
        sec = seconds_per_epoch(dev, hp["train_n"], hp["train_arch"], hp["batch"], amp, cl, False, hp["timed_epochs"])
        cpu_note = "; CPU: channels_last only, bf16 autocast is CUDA-only" if cl and not cuda else ""
        s.report.put(fid, sec, f"{hp['train_n'] / sec:,.0f} img/s{cpu_note}")


def part_compile(s, cap):
    """torch.compile in a child process: the timeout kills a compilation that does not finish in time."""
    hp, dev, cuda = s.hp, s.device, s.device.type == "cuda"
    call = (f"seconds_per_epoch(torch.device('{dev}'), {hp['train_n']}, '{hp['train_arch']}', {hp['batch']}, "
            f"{cuda}, True, True, {hp['timed_epochs']})")
    code = ("import json, torch; from bench.train_epoch import seconds_per_epoch; "
            f"torch.backends.cudnn.benchmark = True; print('RESULT', json.dumps({call}))")
    start = time.perf_counter()
    # its own process group, so a timeout also ends the compiler's worker processes
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        s.report.skip(["train_compile_s"], f"skipped: compilation + {hp['timed_epochs'] + 1} epochs took over "
                                           f"the cap of {cap:.0f} s")
        return
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    wall = time.perf_counter() - start
    result = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode != 0 or not result:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        s.report.skip(["train_compile_s"], f"failed: {(lines[-1] if lines else 'exit ' + str(child.returncode))[:200]}",
                      "failed")
        return
    sec = json.loads(result[-1].split(" ", 1)[1])
    s.report.put("train_compile_s", sec, f"{hp['train_n'] / sec:,.0f} img/s at bs {hp['batch']}; child process "
                                         f"{wall:.0f} s incl. start-up, compilation and a warm-up epoch")


def part_forget(s):
    """main_forget.py --unlearn FT, built through the same library calls on random data already on the device."""
    from unlearn.run import execute, make_context, real_loaders, start_run
    from unlearn.setup import add_unlearn_args, method_config
    from utils import add_common_args
    hp, dev = s.hp, s.device
    data = random_data(hp["ft_train"], hp["ft_test"], dev)
    info = data.info
    model = models.get_model(hp["ft_arch"], 10, 3, 32, info.mean, info.std).to(dev)
    record = models.model_record(model, hp["ft_arch"], info, info.mean, info.std, split=data.split,
                                 train_on="train", epoch=0, metrics={})
    folder = tempfile.mkdtemp(prefix="gpu_suite_ft_")
    try:
        p = make_parser("")
        add_unlearn_args(p)
        add_common_args(p)
        args = p.parse_args(["--unlearn", "FT", "--unlearn_lr", "0.01", "--unlearn_epochs", str(hp["ft_epochs"]),
                             "--class_to_replace", "-1", "--num_indexes_to_replace", str(hp["ft_forget"]),
                             "--mia_jobs", str(hp["mia_jobs"]), "--save_dir", folder, "--quiet"])
        args.dataset, args.split, args.split_seed = "cifar10", "val10", 1  # what load_original would set
        method, cfg = method_config(args, record)
        run = start_run("main_forget.py", args, cfg, method, model, record, data, dev)

        def timed(model, ctx, cfg):  # the method, inside execute()'s method.apply; rows recorded before the evaluation
            with Timer(dev) as t:
                model = method.run(model, ctx, cfg)
            epoch = t.seconds / hp["ft_epochs"]
            s.report.put("ft_epoch_s", epoch, f"{len(run.retain_idx) / epoch:,.0f} img/s; amp={run.amp}; "
                                              "no warm-up, as in a run")
            s.report.put("ft_train_s", t.seconds)
            return model
        run.method = dataclasses.replace(method, run=timed)
        with Timer(dev) as t:
            metrics = execute(run, make_context(run, *real_loaders(run, seed=args.seed)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    s.report.put("ft_eval_s", metrics["eval_s"], f"mia_jobs {hp['mia_jobs']}")
    s.report.put("ft_total_s", t.seconds, "run set-up and file writes included")


def part_expert(s):
    """buffer.py's expert loop: SGD lr 0.01, batch 256, DSA on every batch, a snapshot per epoch."""
    hp, dev = s.hp, s.device
    g = torch.Generator(device=dev).manual_seed(0)
    images = torch.randn(hp["expert_n"], 3, 32, 32, device=dev, generator=g)
    labels = torch.randint(0, 10, (hp["expert_n"],), device=dev, generator=g)
    loader = DeviceLoader(images, labels, batch_size=256, shuffle=True,
                          augment=partial(augment.dsa, strategy=augment.DSA_STRATEGY))
    model = experts.build_expert(hp["expert_arch"], get_info("cifar10"), 0).to(dev)
    experts.train_expert(model, loader, 1, 0.01)  # warm-up
    with Timer(dev) as t:
        experts.train_expert(model, loader, hp["timed_epochs"], 0.01)
    sec = t.seconds / hp["timed_epochs"]
    s.report.put("expert_epoch_s", sec, f"{hp['expert_n'] / sec:,.0f} img/s; no test evaluation")


def part_distill(s, deadline):
    """bench/distill_iter.py's measurement: a random fake trajectory, full batch, DSA, one warm-up iteration."""
    hp, dev = s.hp, s.device
    info = get_info("cifar10")
    for mode in ("exact", "tesla", "unroll"):
        for full, (ipc, steps) in zip(FULL["distill_settings"], hp["distill_settings"]):
            ids = [f"distill_{mode}_ipc{full[0]}_s", f"distill_{mode}_ipc{full[0]}_gb"]
            if time.perf_counter() > deadline:
                s.report.skip(ids, "skipped: the part's cap was reached")
                continue
            try:
                args = SimpleNamespace(model=hp["distill_arch"], lr_weights=0.01, grad_mode=mode,
                                       iters=hp["distill_iters"])
                sec, peak = distill_bench(ipc, steps, args, dev, info)
                s.report.put(ids[0], sec, f"weighted; {hp['distill_iters']} timed iterations")
                if dev.type == "cuda":
                    s.report.put(ids[1], peak)
                else:
                    s.report.skip(ids[1:], "skipped: CPU (no CUDA memory statistics)")
            except Exception as e:  # noqa: BLE001 -- out of memory at one setting leaves the others to measure
                s.report.skip(ids, f"failed: {one_line(e)}", "failed")
            free(dev)


def part_condense(s):
    """condense.py's DM iteration (fresh ConvNetD3, DSA, 256 real images per class) and Blend (k-means + blends)."""
    hp, dev = s.hp, s.device
    data = random_data(hp["cond_n"], 10, dev)
    info, y = data.info, data.y_train_np
    for full, ipc in zip(FULL["dm_ipcs"], hp["dm_ipcs"]):
        pools = cd.class_pools(data.train_idx, y, 10, ipc)
        init = cd.select_real("random", pools, ipc, 0)
        cfg = cd.DMConfig(lr_img=cd.dm_lr_img(ipc), arch=hp["dm_arch"])
        dm = cd.DistributionMatching(data.x_train, pools, init, info, cfg, 0)
        dm.step(), dm.step()  # warm-up
        with Timer(dev) as t:
            for _ in range(hp["dm_iters"]):
                dm.step()
        sec = t.seconds / hp["dm_iters"]
        s.report.put(f"dm_ipc{full}_s", sec, f"batch_real {dm.batch_real}/class; 20000 its: {sec * 20000 / 60:.0f} min")
        del dm
        free(dev)
    with Timer(dev) as t:
        offline = cd.blend_offline(data.x_train, y, data.train_idx, info, hp["blend_ipc"], hp["blend_iters"],
                                   cd.blend_lr(hp["blend_ipc"]), 0)
    s.report.put("blend_offline_s", t.seconds, f"{len(offline['labels'])} blends from {len(data.train_idx)} images; "
                                               "first call (no warm-up)")
    forget = np.sort(np.random.default_rng(0).choice(data.train_idx, len(data.train_idx) // 10, replace=False))
    with Timer(dev) as t:
        out = cd.blend_request(offline, forget, data.x_train, data.y_train)
    s.report.put("blend_request_s", t.seconds, f"{out['n_blend']} blends + {out['n_real']} real images")


def part_loader(s):
    hp, dev = s.hp, s.device
    g = torch.Generator(device=dev).manual_seed(0)
    images = torch.randint(0, 256, (hp["loader_n"], 3, 32, 32), dtype=torch.uint8, device=dev, generator=g)
    labels = torch.randint(0, 10, (hp["loader_n"],), device=dev, generator=g)
    for fid, aug in (("loader_aug_ips", train_augment(get_info("cifar10"))), ("loader_plain_ips", None)):
        loader = DeviceLoader(images, labels, batch_size=256, shuffle=True, augment=aug)
        s.report.put(fid, images_per_second(loader, hp["loader_epochs"], dev), "batch 256, shuffled")


def real_data(s) -> Data:
    """The real CIFAR-10 split (val10, seed 1), loaded once; --smoke keeps the first few images of each part."""
    if s.real is None:
        with Timer(s.device) as t:
            data = load_data("cifar10", s.data_path, s.device)
        n = s.hp["real_subset"]
        if n:  # every k-th test image: the staged test split is sorted by class
            test = torch.arange(len(data.y_test), device=s.device)[::max(1, len(data.y_test) // (n // 4))][:n // 4]
            data = dataclasses.replace(data, train_idx=data.train_idx[:n], val_idx=data.val_idx[:n // 4],
                                       x_test=data.x_test[test], y_test=data.y_test[test])
        s.real = data
        print(f"  loaded {s.npz} in {t.seconds:.1f} s", flush=True)
    return s.real


def part_real_train(s, deadline):
    """main_train's recipe (SGD 0.1, momentum 0.9, wd 5e-4, bs 256, crop+flip, bf16 + channels_last on CUDA),
    for as many epochs as fit: lr 0.1, then cosine to 0 over the epochs the time left allows."""
    hp, dev, cuda = s.hp, s.device, s.device.type == "cuda"
    data = real_data(s)
    info = data.info
    model = models.get_model(hp["real_arch"], 10, 3, 32, info.mean, info.std).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    loader = data.loader("train", train=True, seed=1, channels_last=cuda)
    opt = training.build_optimizer(model.parameters(), hp["real_lr"])
    budget = max(0.0, min(hp["real_train_s"], deadline - time.perf_counter() - 15))  # 15 s for the evaluation
    done, spent, last, first = 0, 0.0, None, None
    while done == 0 or (spent + last <= budget):
        planned = done + max(1, int((budget - spent) / last)) if last else None
        for group in opt.param_groups:  # cosine over the epochs that fit, re-planned after every epoch
            group["lr"] = hp["real_lr"] * (0.5 * (1 + math.cos(math.pi * done / planned)) if planned else 1.0)
        with Timer(dev) as t:
            training.train_epoch(model, loader, opt, amp=cuda)
        done, spent, last = done + 1, spent + t.seconds, t.seconds
        first = first or t.seconds
    val = training.evaluate(model, data.loader("val", channels_last=cuda))["acc"]
    test = training.evaluate(model, data.loader(data.test_indices(), test=True, channels_last=cuda))["acc"]
    s.report.put("real_epochs", done, f"{spent:.0f} s of training")
    if done > 1:
        s.report.put("real_epoch_s", (spent - first) / (done - 1), f"mean of epochs 2-{done}; the first: {first:.2f} s")
    else:
        s.report.put("real_epoch_s", spent, "one epoch, warm-up included")
    s.report.put("real_val_acc", val, f"{len(data.val_idx)} exact val images")
    s.report.put("real_test_acc", test, "JPEG-q75 test split (TA (JPEG test))")


def part_real_distill(s, deadline):
    """A buffer made here (ZCA, ConvNetD3 experts, SGD 0.01, DSA), then MTT's ipc-1 CIFAR-10 setting
    (syn_steps 50, expert_epochs 2, max_start_epoch 2, lr_img 1000, lr_lr 1e-7, lr_teacher 0.01, exact,
    unweighted) for the time left; 2 fresh ConvNetD3 x 300 epochs evaluate the real start and the result."""
    hp, dev = s.hp, s.device
    data = real_data(s)
    info = data.info
    rows = lambda idx: torch.as_tensor(idx, device=dev)
    x = data.x_train.index_select(0, rows(data.train_idx))
    y = data.y_train.index_select(0, rows(data.train_idx))
    with Timer(dev) as t_buf:
        if hp["rd_zca"]:
            space = dd.TrainingSpace(zca=ZCA.fit(x.float() / 255, experts.ZCA_EPS))
        else:
            mean, std = experts.training_norm(info)
            space = dd.TrainingSpace(mean=torch.tensor(mean, device=dev).view(1, -1, 1, 1),
                                     std=torch.tensor(std, device=dev).view(1, -1, 1, 1))
        xs = space(x)
        dsa = partial(augment.dsa, strategy=augment.DSA_STRATEGY)
        trajectories = []
        for k in range(hp["rd_experts"]):
            init_seed, data_seed = experts.expert_seeds(0, k)
            net = experts.build_expert(hp["rd_arch"], info, init_seed).to(dev)
            loader = DeviceLoader(xs, y, batch_size=256, shuffle=True, augment=dsa, seed=data_seed)
            trajectories.append(experts.train_expert(net, loader, hp["rd_expert_epochs"], hp["rd_lr_teacher"])
                                ["trajectory"])
    s.report.put("rd_buffer_s", t_buf.seconds, f"{'ZCA + ' if hp['rd_zca'] else ''}{len(trajectories)} experts on "
                                               f"{len(x)} images")
    pool = dd.ExpertPool([{"trajectories": torch.stack(trajectories)}], dev)
    student = dd.Student(experts.build_expert(hp["rd_arch"], info, 0).to(dev))
    gen = torch.Generator().manual_seed(0)
    chosen = dd.real_init(data.y_train_np, data.train_idx, 1, 10, gen)
    start = space(data.x_train.index_select(0, rows(chosen)))
    syn = dd.SyntheticSet(start, dd.class_labels(10, 1, dev), hp["rd_lr_teacher"], hp["rd_lr_img"], hp["rd_lr_lr"], 0,
                          lr_floor=hp["rd_lr_teacher"] / 100)  # distill.py's default floor
    cfg = dd.IterConfig(hp["rd_syn_steps"], 10, hp["rd_max_start"], hp["rd_match_epochs"])
    evaluation_s = 30.0 if not s.smoke else 1.0
    budget = max(0.0, min(hp["rd_distill_s"], deadline - time.perf_counter() - evaluation_s))
    its, note, stats = 0, "", None
    with Timer(dev) as t:
        began = time.perf_counter()
        while its < hp["rd_max_its"] and (its == 0 or time.perf_counter() - began < budget):
            try:
                stats = dd.distill_iteration(student, syn, pool, gen, cfg)
            except dd.Diverged as e:
                note = f"stopped: {one_line(e)[:80]}"
                break
            its += 1
    if stats is not None and not note:
        note = f"last matching loss {stats['loss']:.3f}, learned lr {syn.lr_value:.3g}"
    s.report.put("rd_iters", its, note)
    s.report.put("rd_s_per_it", t.seconds / max(its, 1), "exact, unweighted")
    val_idx = rows(data.val_idx)
    val = DeviceLoader(space(data.x_train.index_select(0, val_idx)), data.y_train.index_select(0, val_idx),
                       batch_size=1024)
    test = DeviceLoader(space(data.x_test), data.y_test, batch_size=1024)
    for prefix, images, lr in (("rd_start", start, hp["rd_lr_teacher"]), ("rd_dist", syn.images, syn.lr_value)):
        acc = dd.evaluate_synset(hp["rd_arch"], info, images, syn.labels, None, lr, val, test, hp["rd_eval_nets"],
                                 hp["rd_eval_epochs"], strategy=augment.DSA_STRATEGY)
        s.report.put(f"{prefix}_val", acc["val_acc"], f"+- {acc['val_std']:.2f}, {hp['rd_eval_nets']} nets x "
                                                      f"{hp['rd_eval_epochs']} epochs")
        s.report.put(f"{prefix}_test", acc["test_acc"], f"+- {acc['test_std']:.2f}; JPEG-q75 test split")


PARTS = {"train": part_train, "compile": part_compile, "forget": part_forget, "expert": part_expert,
         "distill": part_distill, "condense": part_condense, "loader": part_loader, "real_train": part_real_train,
         "real_distill": part_real_distill}
TAKES_CAP = {"compile"}                                           # these get their cap in seconds
TAKES_DEADLINE = {"distill", "real_train", "real_distill"}        # these a perf_counter deadline
REAL = {"real_train", "real_distill"}


# ---------------------------------------------------------------------------------------------------------
# The report

def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def markdown(meta, report) -> str:
    lines = [f"# GPU suite: {meta['device']}, {meta['date']}", "",
             f"Command: `{meta['command']}`  ",
             f"Device: {meta['device']}; torch {meta['torch_version']}; git {meta['git_commit']}; "
             f"{meta['wall_s']:.0f} s of a {meta['budget_s']:.0f} s budget.  ",
             f"Real data: {meta['real_data']}.  "]
    if meta["smoke"]:
        lines.append("**Smoke run: toy sizes (labels show them); the figures say nothing about speed.**  ")
    lines += [f"Anchors: {ANCHORS}; ratio = ours / anchor (below 1: faster or smaller).", "",
              "| figure | ours | anchor | ratio | notes |", "|---|---|---|---|---|"]
    for r in report.rows.values():
        ours = fmt(r["value"], r["unit"]) if r["status"] == "measured" else r["note"].split(":")[0]
        note = r["note"] if r["status"] == "measured" else r["note"].split(": ", 1)[-1]
        anchor = f"{fmt(r['anchor'], r['unit'])} ({r['anchor_source']})" if r["anchor"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"| {r['label']} | {ours} | {anchor} | {ratio} | {note.replace('|', '/')} |")
    missed = {}
    for r in report.rows.values():
        if r["status"] != "measured":
            missed.setdefault(r["note"], []).append(f"`{r['id']}`")
    if missed:
        lines += ["", "Not measured:"] + [f"- {note}: {', '.join(ids)}" for note, ids in missed.items()]
    return "\n".join(lines) + "\n"


def out_paths(out, device_name, date, smoke):
    base = os.path.join(out, f"gpu_{slug(device_name)}_{date}{'_smoke' if smoke else ''}")
    n, stem = 1, base
    while os.path.exists(stem + ".md") or os.path.exists(stem + ".json"):  # a second run the same day
        n += 1
        stem = f"{base}_{n}"
    return stem + ".md", stem + ".json"


def main():
    p = make_parser(__doc__)
    p.add_argument("--budget_s", type=float, default=480,
                   help="overall wall-clock budget in seconds; parts that no longer fit are skipped with the reason")
    p.add_argument("--smoke", action="store_true",
                   help="every part at toy size (tiny nets, a few hundred images), for tests on a CPU; compile is "
                        "skipped unless --parts names it")
    p.add_argument("--out", default=None,
                   help="folder for gpu_<device>_<date>.md and .json (default docs/results; with --smoke "
                        "runs/gpu_suite_smoke)")
    p.add_argument("--data_path", default="data",
                   help="folder holding cifar10.npz (real CIFAR-10); without it the real-data parts are skipped")
    p.add_argument("--parts", default="all", help=f"comma list of parts to run: all, or {', '.join(PART_NAMES)}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args()
    if not (args.budget_s > 0):
        raise UsageError(f"--budget_s: must be positive, got {args.budget_s:g}")
    wanted = list(PART_NAMES) if args.parts == "all" else [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in PART_NAMES]
    if unknown or not wanted:
        raise UsageError(f"--parts: unknown part(s) {', '.join(unknown) or '(none given)'} "
                         f"(use all, or a comma list of {', '.join(PART_NAMES)})")
    out = prepare_save_dir(args.out or ("runs/gpu_suite_smoke" if args.smoke else "docs/results"), "--out")
    device = get_device(args.device)
    started, clock = datetime.datetime.now(), time.perf_counter()
    end = clock + args.budget_s

    hp = SMOKE if args.smoke else FULL
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA context before the first part's clock starts
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    npz = os.path.join(args.data_path, "cifar10.npz")
    s = SimpleNamespace(hp=hp, device=device, smoke=args.smoke, report=Report(hp, args.smoke), data_path=args.data_path,
                        npz=npz, real=None)
    have_real = os.path.isfile(npz)
    command = "python -m bench.gpu_suite " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"gpu_suite: {name}, torch {torch.__version__}, budget {args.budget_s:.0f} s"
          f"{', smoke' if args.smoke else ''}; real data: {npz if have_real else 'none'}", flush=True)

    order = [x for x in PART_NAMES if x in wanted]
    runnable = [x for x in order if not (x in REAL and not have_real)]
    for i, part in enumerate(PART_NAMES):
        ids = s.report.of_part(part)
        if part not in wanted:
            s.report.skip(ids, "skipped: not in --parts")
            continue
        if part in REAL and not have_real:
            s.report.skip(ids, f"skipped: no {npz} (real CIFAR-10; see docs/results/gpu_suite.md)")
            continue
        if part == "compile" and args.smoke and args.parts == "all":
            s.report.skip(ids, "skipped: --smoke (compilation takes minutes on a CPU; --parts compile runs it)")
            continue
        later = sum(hp["mins"][x] for x in runnable if PART_NAMES.index(x) > i)
        left = end - time.perf_counter() - RESERVE_S
        if left < hp["mins"][part]:
            s.report.skip(ids, f"skipped: budget ({max(left, 0):.0f} s left, the part needs ~{hp['mins'][part]} s)")
            continue
        cap = max(hp["mins"][part], min(hp["caps"][part], left - later))
        print(f"[{part}] cap {cap:.0f} s", flush=True)
        t0 = time.perf_counter()
        try:
            with hard_cap(cap + (10 if part in TAKES_CAP else 0)):  # compile's own timeout comes first
                extra = (cap,) if part in TAKES_CAP else (t0 + cap,) if part in TAKES_DEADLINE else ()
                PARTS[part](s, *extra)
        except OverCap:
            s.report.skip(ids, f"skipped: stopped at the part's cap of {cap:.0f} s")
        except Exception as e:  # noqa: BLE001 -- a failing part is reported, and the suite goes on
            s.report.skip(ids, f"failed: {one_line(e)}", "failed")
            print(f"  failed: {one_line(e)}", flush=True)
        s.report.skip(ids, "skipped: not reached in this part")
        print(f"[{part}] {time.perf_counter() - t0:.1f} s", flush=True)
        free(device)

    meta = {"command": command, "device": name, "torch_version": torch.__version__,
            "date": started.strftime("%Y-%m-%d %H:%M"), "git_commit": git_commit(), "smoke": args.smoke,
            "budget_s": args.budget_s, "wall_s": time.perf_counter() - clock, "parts": order,
            "real_data": (f"{npz} (train exact; test split JPEG q75: TA (JPEG test))" if have_real
                          else f"none ({npz} missing): the real-data parts were skipped"),
            "anchors": ANCHORS}
    md_path, json_path = out_paths(out, name, started.strftime("%Y-%m-%d"), args.smoke)
    text = markdown(meta, s.report)
    write_text(text, md_path)
    write_json({**meta, "figures": list(s.report.rows.values())}, json_path)
    print("\n" + text)
    measured = sum(r["status"] == "measured" for r in s.report.rows.values())
    print(f"gpu_suite: {measured}/{len(s.report.rows)} figures measured in {meta['wall_s']:.0f} s -> {md_path}")


if __name__ == "__main__":
    run_cli(main)

"""The reference READMEs' commands (tests/seed_commands.txt) run here as written, or fail with one line naming our
equivalent, and that equivalent runs (docs/seed_commands.md is the same mapping for readers).

Fast by design (the suite's budget): every command runs in this process, in one scratch folder that shares the
session's digits original; four of them train for real, the rest stop at --dry_run (model, data, method and forget
set checked) or after parsing their flags."""
import glob
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import models
import utils
from datasets import get_info
from forget_sets.memorization import save_proxies
from helpers import ROOT

COMMANDS = os.path.join(ROOT, "tests", "seed_commands.txt")
DOCS = open(os.path.join(ROOT, "docs", "seed_commands.md")).read()
UNLEARN = ("main_forget.py", "main_forget_distill.py", "main_rum.py")
# Appended to shorten a command (argparse keeps the last value); --quiet for all of them.
SHORTER = {
    "buffer.py": ["--train_epochs=1", "--num_experts=1"],
    "distill.py": ["--syn_steps=2", "--expert_epochs=1", "--max_start_epoch=1", "--Iteration=2", "--num_eval=0"],
    "main_train.py": ["--epochs", "1"],
    "main_backdoor.py": ["--epochs", "1", "--unlearn_epochs", "1"],
    **{s: ["--unlearn_epochs", "1", "--mia_jobs", "1"] for s in UNLEARN},
}
OFFLINE = ("cifar10", "cifar100", "svhn", "tinyimagenet")
MODES = ("run", "dry", "parse", "refused", "absent", "shell")


def read_commands():
    """[(section, mode, command, [(mode, command) of its `->` equivalents])] from seed_commands.txt."""
    cases, section = [], ""
    for line in open(COMMANDS):
        if line.startswith("## "):
            section = line[3:].split()[0].lower().replace("-", "_")
        elif line.strip().startswith("->"):
            cases[-1][3].append(tuple(line.strip()[2:].split(None, 1)))
        elif line.strip() and not line.startswith("#"):
            mode, command = line.split(None, 1)
            cases.append((section, mode, command.strip(), []))
    assert all(m in MODES[:3] for c in cases for m, _ in c[3]) and all(c[1] in MODES for c in cases)
    return cases


def split(command):
    """(script or module, argv) of `python [-u] script args` / `python -m module args`."""
    words = shlex.split(command)
    assert words[0] == "python", command
    words = [w for w in words[1:] if w != "-u"]
    return (words[1], words[2:]) if words[0] == "-m" else (words[0], words[1:])


CASES = read_commands()
SEED = [pytest.param(mode, command, eqs,
                    id=f"{section}-{k}-{mode}-{command.split()[0] if mode == 'shell' else split(command)[0]}")
        for k, (section, mode, command, eqs) in enumerate(CASES)]
EQUIVALENTS = [pytest.param(mode, command, id=f"{section}-{k}.{j}-{mode}-{split(command)[0]}")
               for k, (section, _, _, eqs) in enumerate(CASES) for j, (mode, command) in enumerate(eqs)]


def adapt(script, argv, mode):
    """The test's only changes to a command: digits for an offline-unavailable dataset, shortening flags appended."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a.lower() in (f"--dataset={d}" for d in OFFLINE):
            argv[i] = "--dataset=digits"
        elif i and argv[i - 1] == "--dataset" and a.lower() in OFFLINE:
            argv[i] = "digits"

    def named(flag):
        return any(a == flag or a.startswith(flag + "=") for a in argv)

    extra = SHORTER.get(script, []) + (["--quiet"] if script in SHORTER else [])
    if named("--num_indexes_to_replace"):
        extra += ["--num_indexes_to_replace", "60"]
    if not named("--dataset") and script == "main_backdoor.py":
        extra += ["--dataset", "digits"]
    if not named("--dataset") and script in UNLEARN and not (named("--mask") or named("--model_path")):
        extra += ["--dataset", "digits"] + ([] if named("--arch") else ["--arch", "convnet"])
    return argv + extra + (["--dry_run"] if mode == "dry" else [])


class Parsed(Exception):
    """Raised right after a script's flags parsed (mode `parse`)."""


def execute(command, mode, monkeypatch, capsys, as_written=False):
    """(exit code, stdout, stderr) of the command (adapted unless as_written) run in this process, as its own
    __main__ would."""
    script, argv = split(command)
    module = importlib.import_module(script[:-3] if script.endswith(".py") else script)
    monkeypatch.setattr(sys, "argv", [script, *(argv if as_written else adapt(script, argv, mode))])
    if mode == "parse":
        parse = utils.Parser.parse_args

        def parse_then_stop(self, *a, **k):
            raise Parsed(parse(self, *a, **k))

        monkeypatch.setattr(utils.Parser, "parse_args", parse_then_stop)
    code = 0
    try:
        utils.run_cli(module.main)
    except SystemExit as e:
        code = e.code
    except Parsed:
        pass
    out = capsys.readouterr()
    return code, out.out, out.err


def results_files():
    return {p: os.path.getmtime(p) for p in glob.glob("**/results.json", recursive=True)}


def check_runs(mode, command, monkeypatch, capsys):
    before = results_files()
    code, out, err = execute(command, mode, monkeypatch, capsys)
    assert code == 0, err
    if mode == "run":
        new = [p for p, t in results_files().items() if before.get(p) != t]
        assert new, f"no results.json written by: {command}\n{out}"
    if mode == "dry":
        assert "dry run:" in out and not results_files().keys() - before.keys(), out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Digits-sized models run fastest on one thread (and the suite runs one worker per core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(digits_original, digits, tmp_path_factory):
    """The scratch folder every command runs in (see the head of seed_commands.txt)."""
    ws = tmp_path_factory.mktemp("seed_commands")
    info, n = get_info("digits"), len(digits.y_train)
    rng = np.random.default_rng(0)
    record = torch.load(digits_original, weights_only=True)
    for folder in ("orig", "runs/main_train/digits-convnet-train-seed1"):
        os.makedirs(ws / folder)
        shutil.copy(digits_original, ws / folder / "model.pt")
    save_proxies(str(ws / "runs/main_train/digits-convnet-train-seed1/events.npz"),
                 {k: rng.random(n) for k in ("confidence", "max_conf", "entropy", "bi_acc")})
    # Stand-ins: estimate_mem.py's output (its real run trains hundreds of models); the original relabelled as
    # trained on the regun split (enough for --dry_run); a distilled set older than any distill.py run here.
    os.makedirs(ws / "runs/estimate_mem/digits-convnet-stand_in-seed1")
    np.savez(ws / "runs/estimate_mem/digits-convnet-stand_in-seed1/mem_scores.npz", memorization=rng.random(n))
    (ws / "runs/estimate_mem/digits-convnet-stand_in-seed1/results.json").write_text("{}")
    os.makedirs(ws / "orig_regun")
    torch.save({**record, "split": {"name": "regun", "seed": 1}}, ws / "orig_regun/model.pt")
    stand_in = ws / "runs/distill/digits-stand_in-ipc1-seed1"
    os.makedirs(stand_in)
    first = [int(np.flatnonzero(digits.y_train_np == c)[0]) for c in range(10)]
    torch.save({"images": digits.x_train[first].float().cpu() / 255,
                "labels": torch.arange(10), "weights": torch.ones(10), "loss_weights": torch.ones(10), "lr": None,
                "dataset": "digits", "num_classes": 10, "in_channels": 1, "im_size": 8, "zca": None,
                "method": "stand_in", "source": None, "forget_indices": None, "config": {}, "metrics": {}},
               stand_in / "distilled.pt")
    (stand_in / "results.json").write_text("{}")
    os.utime(stand_in / "results.json", (0, 0))
    # Foreign weights: the HF resnet18_cifar10 layout (a bare state dict, torchvision names, 3x3 stem), and a
    # ResNet-18 with pruning masks as main_prune.py writes one (main_backdoor's --mask).
    resnet = models.get_model("resnet18", 10, 1, 8)
    torch.save(resnet.state_dict(), ws / "resnet18_cifar10.pth")
    os.makedirs(ws / "omp/state1")
    masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in resnet.named_parameters() if p.dim() == 4}
    torch.save(models.model_record(resnet, "resnet18", info, info.mean, info.std, masks=masks),
               ws / "omp/state1/model.pt")
    return ws


@pytest.mark.parametrize("mode, command, equivalents", SEED)
def test_seed_command(workspace, monkeypatch, capsys, mode, command, equivalents):
    monkeypatch.chdir(workspace)
    if mode == "shell":  # an environment command: the doc says what to do instead
        assert re.search(rf"`{re.escape(command.split()[0])}\b", DOCS), command
    elif mode == "absent":  # python itself refuses; the doc and the `->` lines give the equivalent
        script = split(command)[0]
        assert not os.path.exists(os.path.join(ROOT, script)) and equivalents
        assert re.search(rf"\b{re.escape(script)}\b", DOCS), f"docs/seed_commands.md does not map {script}"
        res = subprocess.run([sys.executable, os.path.join(ROOT, script)], capture_output=True, text=True)
        assert res.returncode == 2 and "can't open file" in res.stderr
    elif mode == "refused":
        code, _, err = execute(command, mode, monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --") and equivalents, err
    else:
        check_runs(mode, command, monkeypatch, capsys)


@pytest.mark.parametrize("mode, command", EQUIVALENTS)
def test_equivalent_command(workspace, monkeypatch, capsys, mode, command):
    monkeypatch.chdir(workspace)
    check_runs(mode, command, monkeypatch, capsys)


SEED_FLAGS = ["--epochs", "182", "--lr", "0.1", "--batch_size", "128", "--num_workers", "8", "--workers", "4",
              "--print_freq", "50", "--gpu", "0", "--seed", "2", "--data", "./data", "--dataset", "digits"]


@pytest.mark.parametrize("command", [
    "python main_forget.py --mask orig/model.pt --unlearn FT --class_to_replace 3 --arch convnet",
    "python main_forget_distill.py --mask orig/model.pt --unlearn FT --class_to_replace 3 --arch convnet",
    "python main_rum.py --mask orig/model.pt --mem mix --num_indexes_to_replace 30 --plan all=FT --arch convnet",
    "python main_backdoor.py --mask omp/state1/model.pt --unlearn FT --num_indexes_to_replace 30 --arch resnet18",
])
def test_seeds_common_flags_are_accepted(workspace, monkeypatch, capsys, command):
    monkeypatch.chdir(workspace)
    check_runs("dry", command + " " + " ".join(SEED_FLAGS), monkeypatch, capsys)


@pytest.mark.parametrize("extra, message", [
    ("--arch vgg16_bn", "error: --arch: the model is a convnet, not vgg16_bn"),
    ("--dataset cifar10", "error: --dataset: the model was trained on digits, not cifar10"),
    ("--num_indexes 5", "error: unrecognized arguments: --num_indexes 5"),  # no abbreviations
    ("--mask_path m.pt", "error: --mask_path: FT uses no saliency mask"),
])
def test_mismatches_are_one_line(workspace, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(workspace)
    code, _, err = execute(f"python main_forget.py --mask orig/model.pt --unlearn FT --class_to_replace 3 {extra} "
                           "--dry_run", "dry", monkeypatch, capsys, as_written=True)
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_mask_takes_foreign_weights_as_import_checkpoint_does(workspace, monkeypatch, tmp_path, capsys):
    """An Unlearn-Sparse checkpoint (module. prefixes, normalize buffers, pruning pairs) as --mask: the seeds' split,
    the same conversion as scripts/import_checkpoint.py, recorded as imported in results.json's config."""
    from unlearn.setup import add_unlearn_args, load_original
    net = models.get_model("resnet18", 10, 1, 8)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    weight = state.pop("module.layer1.0.conv1.weight")
    mask = (torch.rand_like(weight) > 0.5).float()
    state.update({"module.layer1.0.conv1.weight_orig": weight, "module.layer1.0.conv1.weight_mask": mask,
                  "module.normalize.mean": torch.tensor([0.5]), "module.normalize.std": torch.tensor([0.25])})
    torch.save({"state_dict": state, "epoch": 181}, tmp_path / "sparse.pth.tar")
    p = utils.make_parser("")
    add_unlearn_args(p)
    utils.add_common_args(p)
    args = p.parse_args(["--mask", str(tmp_path / "sparse.pth.tar"), "--dataset", "digits", "--device", "cpu"])
    model, record, data, _ = load_original(args)
    assert record["split"] == {"name": "val10", "seed": 1} and record["arch"] == "resnet18"
    assert record["imported"] == args.imported == str(tmp_path / "sparse.pth.tar")
    assert record["norm_mean"] == [0.5] and record["norm_std"] == [0.25] and data.info.name == "digits"
    assert torch.equal(record["masks"]["layer1.0.conv1.weight"], mask.bool())
    assert torch.equal(model.layer1[0].conv1.weight.cpu(), weight * mask)
    assert "imported" in capsys.readouterr().out


def test_no_distilled_set_names_the_distill_command(workspace, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # no runs/distill here
    code, _, err = execute(f"python main_forget_distill.py --mask {workspace}/orig/model.pt --unlearn FT "
                           "--class_to_replace 3", "dry", monkeypatch, capsys)
    assert code == 2 and err.startswith("error: --distilled:") and "python distill.py --dataset digits" in err, err


def test_the_newest_finished_distilled_set_is_used(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    code, out, err = execute("python main_forget_distill.py --mask orig/model.pt --unlearn FT --class_to_replace 3",
                             "dry", monkeypatch, capsys)
    newest = max(glob.glob("runs/distill/digits-*/results.json"), key=os.path.getmtime)
    assert code == 0 and f"--distilled not given: using the newest, {os.path.dirname(newest)}/distilled.pt" in out



def test_gpu_is_a_device_where_cuda_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    p = utils.make_parser("")
    utils.add_common_args(p)
    utils.add_seed_args(p)
    assert p.parse_args(["--gpu", "1"]).device == "cuda:1"
    assert p.parse_args(["--gpu", "1", "--device", "cpu"]).device == "cpu"  # the later flag wins
    with pytest.raises(SystemExit):
        p.parse_args(["--gpu", "2"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert p.parse_args(["--gpu", "0"]).device == "auto"  # no effect without CUDA

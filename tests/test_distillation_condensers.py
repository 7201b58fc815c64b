"""distillation/condensers.py and condense.py on digits: k-center's picks, forget images never read, DM
learning and resuming, Blend's offline stage made once and reused, bad inputs."""
import json
import os

import numpy as np
import pytest
import torch

import models
from distillation import condensers as cd
from utils import UsageError

import helpers
from helpers import ONE_THREAD


def run(*args):
    return helpers.run("condense.py", *args, "--quiet", env=ONE_THREAD)


def random_convnet(info, seed=0):
    torch.manual_seed(seed)
    return models.get_model("convnet", info.num_classes, info.channels, info.im_size, info.mean, info.std)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, digits):
    """An untrained model.pt: condense.py needs its dataset and split; features need not be good."""
    path = tmp_path_factory.mktemp("orig") / "model.pt"
    info = digits.info
    torch.save(models.model_record(random_convnet(info), "convnet", info, info.mean, info.std,
                                   split=digits.split), path)
    return str(path)


@pytest.fixture(scope="module")
def forget_case(digits):
    """Random forget indices, the retain pool, and a copy of the train images whose forget images are noise."""
    forget = np.sort(np.random.default_rng(0).choice(digits.train_idx, 80, replace=False))
    pool = np.setdiff1d(digits.train_idx, forget)
    perturbed = digits.x_train.clone()
    rows = torch.as_tensor(forget)
    perturbed[rows] = torch.randint(0, 256, perturbed[rows].shape, dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(1))
    return forget, pool, perturbed


def test_kcenter_starts_nearest_the_mean_then_takes_the_farthest():
    points = torch.tensor([[0., 0.], [1., 0.], [0., 1.], [-1., 0.], [5., 5.], [0., -4.]])
    # mean (0.83, 0.33): nearest is (1, 0); farthest from it (5, 5); then (0, -4), 4.1 from its nearest
    assert cd.kcenter(points, 3).tolist() == [1, 4, 5]
    assert sorted(cd.kcenter(points, 6).tolist()) == list(range(6))   # never picks a row twice


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_coresets_never_read_forget_images(digits, forget_case, method):
    forget, pool, perturbed = forget_case
    model = random_convnet(digits.info)
    pools = cd.class_pools(pool, digits.y_train_np, 10, 3)
    chosen = [cd.select_real(method, pools, 3, 0, model, x) for x in (digits.x_train, perturbed)]
    assert np.array_equal(*chosen) and not np.isin(chosen[0], forget).any()
    assert np.bincount(digits.y_train_np[chosen[0]]).tolist() == [3] * 10


def dm_run(digits, pools, x, steps, **cfg):
    init = cd.select_real("random", pools, 2, 0)
    config = cd.DMConfig(**{"batch_real": 16, **cfg})
    dm = cd.DistributionMatching(x, pools, init, digits.info, config, seed=0)
    for _ in range(steps):
        dm.step()
    return dm


def test_dm_never_reads_forget_images_and_resumes_exactly(digits, forget_case):
    forget, pool, perturbed = forget_case
    pools = cd.class_pools(pool, digits.y_train_np, 10, 2)
    a = dm_run(digits, pools, digits.x_train, 3, lr_weight=0.01)
    b = dm_run(digits, pools, perturbed, 3, lr_weight=0.01)
    assert torch.equal(a.syn.images, b.syn.images) and torch.equal(a.syn.weights, b.syn.weights)
    # 2 steps, a state_dict, a new run loading it, 1 more step == 3 steps straight
    c = dm_run(digits, pools, digits.x_train, 2, lr_weight=0.01)
    d = dm_run(digits, pools, digits.x_train, 0, lr_weight=0.01)
    d.load_state_dict(c.state_dict())
    d.step()
    assert torch.equal(d.syn.images, a.syn.images) and torch.equal(d.syn.weights, a.syn.weights)


def test_dm_lowers_the_matching_loss_and_learns_weights(digits):
    pools = cd.class_pools(digits.train_idx, digits.y_train_np, 10, 2)
    b = min(len(m) for _, m in pools)
    dm = dm_run(digits, pools, digits.x_train, 0, batch_real=32, lr_weight=0.05, dsa_strategy=None)
    real = dm.space(cd.gather(digits.x_train, np.concatenate([m[:b] for _, m in pools])))

    @torch.no_grad()
    def objective():  # the DM loss under four fixed networks, whole classes, no augmentation
        return sum(float(cd.dm_loss(cd.reinit_(dm.net, torch.Generator().manual_seed(100 + s)), real,
                                    dm.syn.images, None, 10, lambda x: x)) for s in range(4))

    before, images = objective(), dm.syn.images.detach().clone()
    for _ in range(10):
        dm.step()
    assert objective() < 0.98 * before and not torch.equal(images, dm.syn.images)
    w = dm.syn.weights.detach()
    assert not torch.equal(w, torch.ones_like(w)) and abs(float(dm.syn.loss_weights().mean()) - 1) < 1e-6


def test_blend_offline_stage_and_request(digits, forget_case):
    forget, pool, perturbed = forget_case
    info = digits.info
    off = cd.blend_offline(digits.x_train, digits.y_train_np, digits.train_idx, info, 3, 4, cd.blend_lr(3),
                           seed=0)
    K = len(off["labels"])
    assert K == 30 and sorted(off["indices"].tolist()) == digits.train_idx.tolist()
    assert off["loss"][-1] < off["loss"][0]
    sums = torch.zeros(K, dtype=off["mix"].dtype).index_add_(0, off["cluster"], off["mix"])
    assert torch.allclose(sums, torch.ones(K))   # each blend is an affine combination of its members
    # every member of a cluster has the cluster's class
    assert torch.equal(off["labels"][off["cluster"]], digits.y_train[off["indices"]])

    out = cd.blend_request(off, forget, digits.x_train, digits.y_train)
    again = cd.blend_request(off, forget, perturbed, digits.y_train)   # forget pixels changed after offline
    assert torch.equal(out["images"], again["images"]) and torch.equal(out["labels"], again["labels"])
    touched = np.unique(off["cluster"].numpy()[np.isin(off["indices"].numpy(), forget)])
    assert not np.isin(out["blend_clusters"].numpy(), touched).any()
    members = off["indices"].numpy()[np.isin(off["cluster"].numpy(), touched)]
    assert np.array_equal(out["real_indices"].numpy(), np.setdiff1d(members, forget))
    assert out["n_blend"] + out["n_real"] == len(out["labels"]) == K - len(touched) + len(out["real_indices"])
    # no forget set: every cluster's blend
    assert cd.blend_request(off, None, digits.x_train, digits.y_train)["n_blend"] == K


def test_offline_stage_of_other_data_is_refused(digits):
    info = digits.info
    wanted = cd.blend_manifest(info, digits.split, len(digits.train_idx), 3, 12, 0.8, 0)
    with pytest.raises(UsageError, match="--offline_dir.*dataset=cifar10"):
        cd.check_offline({**wanted, "dataset": "cifar10"}, wanted, "somewhere")
    with pytest.raises(UsageError, match="--ipc: 500 is more than"):
        cd.class_pools(digits.train_idx, digits.y_train_np, 10, 500)


def test_blend_script_makes_the_offline_stage_once(model_path, tmp_path, digits):
    offline = str(tmp_path / "offline")
    common = ["--method", "blend", "--ipc", "3", "--mask", model_path, "--offline_dir", offline]
    res = run(*common, "--class_to_replace", "-1", "--num_indexes_to_replace", "60", "--save_dir", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    stamp = os.stat(os.path.join(offline, "offline.pt")).st_mtime_ns
    first = json.load(open(tmp_path / "a" / "results.json"))["metrics"]
    assert not first["offline_reused"] and first["offline_s"] > 0 and 0 < first["reduced_ratio"] <= 1
    res = run(*common, "--class_to_replace", "3", "--save_dir", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert os.stat(os.path.join(offline, "offline.pt")).st_mtime_ns == stamp
    m = json.load(open(tmp_path / "b" / "results.json"))["metrics"]
    assert m["offline_reused"] and m["offline_s"] == first["offline_s"]
    assert {"request_s", "wall_s", "peak_mem_mb"} <= set(m)
    d = torch.load(tmp_path / "b" / "distilled.pt", weights_only=True)
    # class 3 forgotten whole: its clusters are dropped and it has no retain images left
    assert 3 not in d["labels"].tolist() and m["n_blend"] == 27 and m["n_real"] == 0
    assert m["reduced_ratio"] == pytest.approx(27 / (1299 - len(d["forget_indices"])))
    assert d["metrics"]["n"] == len(d["images"]) and torch.equal(d["loss_weights"], torch.ones(27))
    # the stored stage is refused for another feature network (what the script turns into exit code 2)
    same = cd.blend_manifest(digits.info, digits.split, len(digits.train_idx), 3, 12, cd.blend_lr(3), 0)
    assert cd.blend_offline_stage(offline, same, make=None)[1]
    other = {**same, "feature_net": {**same["feature_net"], "seed": 1}}
    with pytest.raises(UsageError, match="^--offline_dir: '.*offline' holds a Blend offline stage made with feature_net"):
        cd.blend_offline_stage(offline, other, make=None)


def test_dm_script_stops_and_resumes(model_path, tmp_path):
    common = ["--method", "dm", "--ipc", "2", "--iterations", "4", "--batch_real", "8", "--save_every", "1",
              "--learn_weights", "--mask", model_path, "--class_to_replace", "3", "--save_dir", str(tmp_path)]
    res = run(*common, "--stop_after", "2")
    assert res.returncode == 0 and "stopped at iteration 2" in res.stdout, res.stderr
    assert not os.path.exists(tmp_path / "distilled.pt")
    res = run(*common)
    assert res.returncode == 0, res.stderr
    out = json.load(open(tmp_path / "results.json"))
    assert [h["it"] for h in out["history"]] == [1, 2, 3, 4]
    m = out["metrics"]
    assert m["offline_s"] == 0 and m["request_s"] > 0 and m["peak_mem_mb"] > 0 and m["n"] == 18
    d = torch.load(tmp_path / "distilled.pt", weights_only=True)
    assert d["lr"] is None and 3 not in d["labels"].tolist() and not torch.equal(d["weights"], torch.ones(18))
    assert d["images"].min() >= 0 and d["images"].max() <= 1
    assert np.array_equal(np.load(tmp_path / "forget_indices.npy"), d["forget_indices"].numpy())


def test_unknown_method_is_one_error_line():
    res = run("--method", "coreset")
    assert res.returncode == 2 and res.stderr == ("error: --method: 'coreset' is not one of random, herding, kcenter, "
                                                  "dm, blend\n")

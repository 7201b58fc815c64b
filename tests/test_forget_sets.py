"""Forget sets by difficulty: the proxies find memorised (relabelled) digits, groups and ES bins have the
promised shapes, score files load, the subsampling estimator is right and resumes, bad input is one line."""
import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import torch

import datasets
import estimate_mem
import forget_sets
import main_train
import models
import training
from forget_sets import groups as grp
from forget_sets import memorization as memo
from utils import UsageError, add_common_args, add_forget_args, make_parser, save_checkpoint

from helpers import run, run_main


def main_of(module, monkeypatch, *argv):
    """An entry script's main() in this process (no interpreter start-up): the tests stay fast."""
    monkeypatch.setattr(sys, "argv", [module.__name__ + ".py", *map(str, argv)])
    module.main()


def one_error_line(res, *words):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def auc(values, positive):
    """Fraction of (positive, negative) pairs in which the positive one scores higher."""
    return float((values[positive][:, None] > values[~positive][None, :]).mean())


@pytest.fixture(scope="module")
def memorised(digits):
    """A ConvNetD1 trained on 400 train-split digits of which 10 carry a wrong label. It ends up fitting
    those labels, which the other images contradict: the textbook memorised examples."""
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(digits.train_idx, 400, replace=False))
    wrong = subset[:10]
    y = digits.y_train.clone()
    y[wrong] = (y[wrong] + torch.from_numpy(rng.integers(1, 10, len(wrong)))) % 10
    data = dataclasses.replace(digits, y_train=y, train_idx=subset)
    torch.manual_seed(0)
    model = models.get_model("convnetd1", 10, 1, 8, digits.info.mean, digits.info.std)
    optimizer = training.build_optimizer(model.parameters(), 0.05)
    scheduler = training.build_scheduler(optimizer, "cosine", 40)
    loader = data.loader("train", train=True, batch_size=32, seed=0)
    events = memo.EventRecorder(len(y), "cpu")
    for _ in range(40):
        training.train_epoch(model, loader, optimizer, on_batch=events)
        scheduler.step()
    proxies = {**events.proxies(), "ho_ret": memo.heldout_retrain(model, data, epochs=5, lr=0.01, patience=2),
               "curvature": memo.loss_curvature(model, data)}
    return data, model, wrong, proxies


def test_proxies_rank_mislabeled_digits_above_clean_ones(memorised):
    data, model, wrong, proxies = memorised
    fitted = training.predict(model, data.loader(wrong))[0].argmax(1) == data.y_train[wrong]
    assert fitted.float().mean() > 0.8  # the premise: the wrong labels were learned
    positive = np.isin(data.train_idx, wrong)
    for name, values in proxies.items():
        assert values.shape == (len(data.y_train),)
        assert auc(values[data.train_idx], positive) > 0.9, name
    unseen = np.setdiff1d(np.arange(len(data.y_train)), data.train_idx)
    assert np.isnan(proxies["confidence"][unseen]).all()  # events exist only for trained-on images


def test_main_train_records_events_across_a_resume(tmp_path, monkeypatch):
    flags = ["--dataset", "digits", "--arch", "convnetd1", "--epochs", "2", "--batch_size", "128", "--quiet",
             "--record_events", "--save_dir", tmp_path]
    main_of(main_train, monkeypatch, *flags, "--stop_after", "1")
    assert (tmp_path / "events_partial.pt").exists() and not (tmp_path / "events.npz").exists()
    main_of(main_train, monkeypatch, *flags)
    z = np.load(tmp_path / "events.npz")
    assert {"confidence", "max_conf", "entropy", "bi_acc", "count"} <= set(z.files)
    train = datasets.load_data("digits").train_idx
    assert np.all(z["count"][train] == 2)  # both epochs, one before and one after the resume
    assert np.isnan(z["confidence"][np.setdiff1d(np.arange(len(z["count"])), train)]).all()
    assert not (tmp_path / "events_partial.pt").exists()


def test_groups_sizes_disjoint_and_mid_closest_to_centre():
    rng = np.random.default_rng(0)
    scores = rng.random(300).round(2)  # many ties on purpose
    scores[:20] = np.nan
    pool = np.arange(10, 290)
    scored = pool[np.isfinite(scores[pool])]
    g = grp.groups(scores, 40, 0.5, pool)
    assert [len(g[k]) for k in ("high", "mid", "low")] == [40, 40, 40]
    everything = np.concatenate(list(g.values()))
    assert len(np.unique(everything)) == 120 and np.isin(everything, scored).all()
    others = lambda chosen, among=scored: np.setdiff1d(among, chosen)
    assert scores[g["high"]].min() >= scores[others(g["high"])].max()
    assert scores[g["low"]].max() <= scores[others(g["low"])].min()
    rest = others(np.concatenate([g["high"], g["low"]]))
    dist = np.abs(scores - 0.5)
    assert dist[g["mid"]].max() <= dist[others(g["mid"], rest)].min()
    # one group alone: high/low as above; mid is the N closest to the centre (median by default) in the pool
    assert np.array_equal(grp.select_group(scores, "high", 40, 0.5, pool), g["high"])
    mid = grp.select_group(scores, "mid", 40, None, pool)
    dist = np.abs(scores - np.median(scores[scored]))
    assert len(mid) == 40 and dist[mid].max() <= dist[others(mid)].min()
    # mix: equal thirds, the groups of N/3
    mix = grp.mix_groups(scores, 120, 0.5, pool)
    assert all(np.array_equal(mix[k], g[k]) for k in g)
    shuffled = grp.shuffle_groups(g, seed=1)
    assert [len(v) for v in shuffled.values()] == [40, 40, 40]
    assert np.array_equal(np.sort(np.concatenate(list(shuffled.values()))), np.sort(everything))
    assert not np.array_equal(shuffled["high"], g["high"])
    with pytest.raises(UsageError, match="multiple of 3"):
        grp.mix_groups(scores, 121, 0.5, pool)
    with pytest.raises(UsageError, match="--num_indexes_to_replace"):
        grp.groups(scores, 100, 0.5, pool)


def test_es_bins_are_15_equal_bins_ordered_by_distance():
    feats = torch.randn(157, 4)
    pool = np.arange(1000, 1157)
    bins = grp.es_bins(feats, pool)
    assert len(bins) == 15 and all(len(b) == 157 // 15 for b in bins)
    assert len(np.unique(np.concatenate(bins))) == 150
    dist = (feats - feats.mean(0)).norm(dim=1).numpy()
    d = [dist[b - 1000] for b in bins]
    assert all(d[k].max() <= d[k + 1].min() for k in range(14))


def test_entanglement_score_by_hand():
    retain = torch.tensor([[0.0, 0.0], [2.0, 0.0]])   # mean (1, 0), mean squared spread 1
    forget = torch.tensor([[10.0, 0.0], [12.0, 0.0]])  # mean (11, 0), spread 1; mu = (6, 0)
    assert grp.entanglement_score(retain, forget) == pytest.approx((1 + 1) / (0.5 * (25 + 25)))
    closer = forget - torch.tensor([8.0, 0.0])
    assert grp.entanglement_score(retain, closer) > grp.entanglement_score(retain, forget)


def test_mem_score_files_load_by_either_key(tmp_path):
    values = np.linspace(0, 1, 50)
    np.savez(tmp_path / "rum.npz", memorization=values)
    np.savez(tmp_path / "fz.npz", tr_mem=values, tr_labels=np.zeros(50))
    for name in ("rum.npz", "fz.npz"):
        assert np.array_equal(memo.load_mem_scores(str(tmp_path / name), 50), values)
    with pytest.raises(UsageError, match="--mem_scores: .* of length 60"):
        memo.load_mem_scores(str(tmp_path / "rum.npz"), 60)
    np.savez(tmp_path / "other.npz", scores=values)
    with pytest.raises(UsageError, match="'memorization' or 'tr_mem'"):
        memo.load_mem_scores(str(tmp_path / "other.npz"), 50)


def nearest_neighbour_runs(calls, stop_at=None):
    """A 1-nearest-neighbour 'model' on two 1-D clusters, where image 0 sits in cluster 0 with label 1: it
    is classified right exactly when it was trained on (it is its own neighbour). It stands apart, so no other
    image has it as a neighbour: the rest are always right."""
    x = np.concatenate([[-1.0], np.linspace(0, 1, 29), np.linspace(5, 6, 30)])
    y = np.repeat([0, 1], 30)
    y[0] = 1

    def train_and_predict(k, subset):
        if k == stop_at:
            return None
        calls.append(k)
        nearest = subset[np.abs(x[:, None] - x[subset][None, :]).argmin(1)]
        return y[nearest] == y
    return train_and_predict


def test_subsampling_estimator_finds_the_memorised_point_and_resumes(tmp_path):
    pool = np.arange(55)  # 55..59 are never trained on: no score
    calls = []
    full = memo.subsample_memorization(nearest_neighbour_runs(calls), 60, pool, 20, 0.7, seed=0)
    mem = full["memorization"]
    assert mem[0] == 1 and np.all(mem[1:55] == 0) and np.isnan(mem[55:]).all()
    assert np.all(full["n_in"][:55] + full["n_out"][:55] == 20) and full["models"] == 20
    store = str(tmp_path / "models")
    calls.clear()
    part = memo.subsample_memorization(nearest_neighbour_runs(calls, stop_at=8), 60, pool, 20, 0.7, 0, store)
    assert part["models"] == 8 and calls == list(range(8))
    calls.clear()
    again = memo.subsample_memorization(nearest_neighbour_runs(calls), 60, pool, 20, 0.7, 0, store)
    assert calls == list(range(8, 20))  # the first eight came from their files
    assert np.array_equal(again["memorization"], mem, equal_nan=True)


def test_estimate_mem_script_writes_loadable_scores(tmp_path, monkeypatch, capsys):
    main_of(estimate_mem, monkeypatch, "--dataset", "digits", "--arch", "convnetd1", "--epochs", "1", "--batch_size",
            "128", "--lr", "0.05", "--quiet", "--save_dir", tmp_path, "--num_models", "2")
    out = capsys.readouterr().out
    assert "2/2 models (2 new here" in out and "models/hour" in out, out
    assert len(os.listdir(tmp_path / "models")) == 2  # what a rerun would reuse
    data = datasets.load_data("digits")
    mem = memo.load_mem_scores(str(tmp_path / "mem_scores.npz"), len(data.y_train))
    assert np.isnan(mem[data.val_idx]).all() and np.isfinite(mem[data.train_idx]).any()
    assert json.load(open(tmp_path / "results.json"))["metrics"]["models"] == 2


def forget_args(*argv):
    p = make_parser("test")
    add_forget_args(p)
    add_common_args(p)
    p.add_argument("--mask", dest="model_path", default=None)
    return p.parse_args(list(argv))


def test_forget_flags_select_by_difficulty(digits, memorised, tmp_path):
    scores = np.random.default_rng(1).random(len(digits.y_train))
    np.savez(tmp_path / "mem.npz", memorization=scores)
    idx, desc = forget_sets.forget_set(forget_args("--forget_group", "high", "--mem_scores", str(tmp_path / "mem.npz"),
                                                "--num_indexes_to_replace", "30"), digits)
    assert desc["kind"] == "mem_high" and desc["n"] == 30 and idx.dtype == np.int64
    assert np.array_equal(idx, np.sort(digits.train_idx[np.argsort(scores[digits.train_idx])[-30:]]))
    # a proxy file, and the original model for the entanglement score
    model = memorised[1]
    info = digits.info
    save_checkpoint(models.model_record(model, "convnetd1", info, info.mean, info.std), str(tmp_path / "model.pt"))
    memo.save_proxies(str(tmp_path / "proxies.npz"), {"curvature": memorised[3]["curvature"]})
    idx, desc = forget_sets.forget_set(forget_args("--forget_group", "mix", "--proxy_file", str(tmp_path / "proxies.npz"),
                                                "--proxy", "curvature", "--num_indexes_to_replace", "60",
                                                "--class_to_replace", "3,5", "--mask", str(tmp_path / "model.pt")),
                                    digits)
    assert desc["kind"] == "mem_mix_curvature" and desc["centre"] == "median" and desc["es"] > 0
    assert len(idx) == 60 and set(digits.y_train_np[idx]) <= {3, 5}
    idx, desc = forget_sets.forget_set(forget_args("--es_group", "14", "--mask", str(tmp_path / "model.pt")), digits)
    assert desc["kind"] == "es14" and len(idx) == len(digits.train_idx) // 15 and desc["es"] > 0
    # named groups for RUM's runner: mix -> high/mid/low; ES -1 -> N/3 of RUM's bins 3, 12, 14
    named = grp.groups_from_args(forget_args("--forget_group", "mix", "--mem_scores", str(tmp_path / "mem.npz"),
                                            "--num_indexes_to_replace", "60"), digits)
    assert {k: len(v) for k, v in named.items()} == {"high": 20, "mid": 20, "low": 20}
    named = grp.groups_from_args(forget_args("--es_group", "-1", "--num_indexes_to_replace", "30"), digits, model)
    assert {k: len(v) for k, v in named.items()} == {"es3": 10, "es12": 10, "es14": 10}
    assert np.isin(named["es14"], idx).all()


def test_spearman_table(tmp_path, monkeypatch, capsys):
    scores = np.random.default_rng(2).random(100)
    scores[:5] = np.nan
    np.savez(tmp_path / "mem.npz", memorization=scores)
    memo.save_proxies(str(tmp_path / "p.npz"), {"ho_ret": scores ** 3, "confidence": -scores})
    rho = memo.correlations(scores, {"ho_ret": scores ** 3, "confidence": -scores})
    assert rho["ho_ret"] == (pytest.approx(1.0), 95) and rho["confidence"][0] == pytest.approx(-1.0)
    main_of(memo, monkeypatch, "--mem_scores", tmp_path / "mem.npz", "--proxy_file", tmp_path / "p.npz")
    table = dict(line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:])
    assert table == {"ho_ret": "1.000", "confidence": "-1.000"}


def test_bad_inputs_are_one_error_line(tmp_path):
    n_train = len(datasets.load_data("digits").y_train)  # official train images (split: 90% of them)
    np.savez(tmp_path / "short.npz", memorization=np.zeros(50))
    base = ["--dataset", "digits", "--forget_group", "high"]
    one_error_line(run("forget_sets", *base, "--mem_scores", str(tmp_path / "short.npz"),
                       "--num_indexes_to_replace", "10"), "--mem_scores", str(n_train))
    np.savez(tmp_path / "ok.npz", tr_mem=np.zeros(n_train))
    one_error_line(run_main("forget_sets.__main__", *base, "--mem_scores", str(tmp_path / "ok.npz"),
                            "--num_indexes_to_replace", "5000"), "--num_indexes_to_replace", "5000")

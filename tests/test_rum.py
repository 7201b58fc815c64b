"""The RUM sequential runner (main_rum.py): retain bookkeeping, baselines, resuming, bad plans."""
import json
import os
import sys

import numpy as np
import pytest

import main_rum
import datasets
from helpers import run


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_original):
    out = tmp_path_factory.mktemp("rum")
    train_idx = datasets.load_data("digits").train_idx
    pick = np.random.default_rng(0).choice(train_idx, 60, replace=False)
    groups = {"low": np.sort(pick[:20]), "mid": np.sort(pick[20:40]), "high": np.sort(pick[40:])}
    np.savez(out / "groups.npz", **groups)
    return digits_original, str(out / "groups.npz"), groups, train_idx


def spy_main(monkeypatch, argv):
    """main_rum.main() with execute replaced by a recorder (no training, no evaluation)."""
    seen = []

    def fake_execute(run, ctx, extra_metrics=None):
        seen.append({"name": run.name, "forget": run.forget_idx, "retain": run.retain_idx})
        os.makedirs(run.args.save_dir, exist_ok=True)
        return {"RTE_s": 1.0}

    monkeypatch.setattr(main_rum, "execute", fake_execute)
    monkeypatch.setattr(sys, "argv", ["main_rum.py", *argv, "--quiet"])
    main_rum.main()
    return seen


def test_each_step_retains_everything_but_the_groups_done_so_far(setup, monkeypatch, tmp_path):
    model, groups_file, groups, train_idx = setup
    seen = spy_main(monkeypatch, ["--mask", model, "--groups_file", groups_file, "--save_dir", str(tmp_path),
                                  "--plan", "low=none; mid=FT,unlearn_epochs=1; high=GA,unlearn_epochs=1"])
    done = []
    for step, name in zip(seen[:3], ("low", "mid", "high")):
        done.append(groups[name])
        assert np.array_equal(step["forget"], groups[name])
        assert np.array_equal(step["retain"], np.setdiff1d(train_idx, np.concatenate(done)))
    final = seen[3]  # the final model, judged on every group at once
    assert np.array_equal(final["forget"], np.sort(np.concatenate(list(groups.values()))))
    assert final["name"] == "rum: low=none > mid=FT > high=GA"


def test_shuffle_deals_random_groups_of_the_same_sizes_and_all_is_the_union(setup, monkeypatch, tmp_path):
    model, groups_file, groups, _ = setup
    seen = spy_main(monkeypatch, ["--mask", model, "--groups_file", groups_file, "--save_dir", str(tmp_path / "s"),
                                  "--plan", "low=none; mid=none; high=none", "--shuffle"])
    shuffled = [s["forget"] for s in seen[:3]]
    assert [len(s) for s in shuffled] == [20, 20, 20]
    assert np.array_equal(np.sort(np.concatenate(shuffled)), np.sort(np.concatenate(list(groups.values()))))
    assert not np.array_equal(shuffled[0], groups["low"])
    seen = spy_main(monkeypatch, ["--mask", model, "--groups_file", groups_file, "--save_dir", str(tmp_path / "v"),
                                  "--plan", "all=NG,alpha=0.9"])
    assert len(seen[0]["forget"]) == 60 and seen[1]["name"] == "all=NG"


def test_a_real_run_saves_every_step_and_resumes_without_redoing_them(setup, tmp_path):
    model, groups_file, _, _ = setup
    args = ["--mask", model, "--groups_file", groups_file, "--save_dir", str(tmp_path), "--quiet", "--mia_jobs",
            "1", "--batch_size", "64", "--plan", "low=none; mid=none; high=FT,unlearn_epochs=1,unlearn_lr=0.01"]
    first = run("main_rum.py", *args)
    assert first.returncode == 0, first.stderr
    saved = sorted(os.listdir(tmp_path / "step3-high-FT"))
    assert saved == ["forget_indices.npy", "model.pt", "outputs.npz", "results.json"]
    result = json.load(open(tmp_path / "results.json"))
    steps = result["config"]["steps"]
    assert result["forget"]["n"] == 60 and [s["group"] for s in steps] == ["low", "mid", "high"]
    assert result["metrics"]["RTE_s"] == pytest.approx(sum(s["RTE_s"] for s in steps))
    from evaluation.summarize import summarize  # one row: the steps' results.json are the run's insides
    assert [r["method"] for r in summarize(str(tmp_path))] == ["rum: low=none > mid=none > high=FT"]
    again = run("main_rum.py", *args)
    assert again.returncode == 0 and again.stdout.count("already done") == 3, again.stdout


@pytest.mark.parametrize("plan, flag", [("low=none; mid=Foo", "unknown method"), ("low=FT,lr=3", "lr"),
                                        ("bottom=none", "unknown group"), ("low", "group=method"),
                                        ("low=none; high=FT", "exactly one step")])
def test_bad_plans_are_usage_errors(setup, tmp_path, monkeypatch, plan, flag):
    model, groups_file, _, _ = setup
    monkeypatch.setattr(sys, "argv", ["main_rum.py", "--mask", model, "--groups_file", groups_file, "--plan", plan,
                                      "--save_dir", str(tmp_path)])
    with pytest.raises(main_rum.UsageError, match=flag):
        main_rum.main()


def test_a_bad_plan_is_one_line_and_exit_2(setup, tmp_path):
    model, groups_file, _, _ = setup
    res = run("main_rum.py", "--mask", model, "--groups_file", groups_file, "--plan", "low=Foo", "--save_dir",
              str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("error:") == 1 and "--plan" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr

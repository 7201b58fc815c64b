"""Shell tooling: the job runner, the SLURM array script, the sweep generator, and the tiny quickstart."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, env=None, cwd=ROOT):
    return subprocess.run(["bash", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def write_jobs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "done_dir").mkdir()
    (tmp_path / "done_dir" / "results.json").write_text("{}")
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("\n".join([
        "# comment lines and blank lines are not jobs",
        f"echo a >> {out}/a",
        "",
        f"echo b >> {out}/b; exit 3",
        f"echo c >> {out}/c --save_dir {tmp_path}/done_dir",   # already has results.json: skipped
        f"echo d >> {out}/d",
    ]) + "\n")
    return jobs, out


def test_runner_skips_finished_jobs_and_reruns_the_rest(tmp_path):
    jobs, out = write_jobs(tmp_path)
    logs = str(tmp_path / "logs")
    assert sh("scripts/run_jobs.sh", "--count", str(jobs)).stdout.strip() == "4"
    first = sh("scripts/run_jobs.sh", str(jobs), "--parallel", "2", "--logdir", logs)
    assert first.returncode == 1 and "failed: 2" in first.stdout
    assert not (out / "c").exists()                      # its --save_dir already held results.json
    assert (tmp_path / "logs" / "job2.log").read_text().count("job 2:") == 1
    second = sh("scripts/run_jobs.sh", str(jobs), "--logdir", logs)   # a rerun after a crash or kill
    assert second.returncode == 1
    # done jobs ran once, the failed one ran again
    assert (out / "a").read_text() == "a\n" and (out / "d").read_text() == "d\n"
    assert (out / "b").read_text() == "b\nb\n"


def test_slurm_array_runs_its_own_line(tmp_path):
    jobs, out = write_jobs(tmp_path)
    res = sh("scripts/slurm/array.sbatch", str(jobs), env={"SLURM_ARRAY_TASK_ID": "4"})
    assert res.returncode == 0 and (out / "d").exists() and not (out / "a").exists()
    missing = sh("scripts/slurm/array.sbatch", str(jobs), env={"SLURM_ARRAY_TASK_ID": "9"})
    assert missing.returncode == 2 and "no job 9" in missing.stderr


def test_make_jobs_adds_retrain_and_expands_the_grid(tmp_path):
    res = subprocess.run([sys.executable, "-m", "scripts.make_jobs", "--model", "m.pt", "--methods", "GA",
                          "--classes", "0-1", "--random", "100", "--seeds", "1,2",
                          "--grid", "unlearn_lr=1e-4,1e-3", "--root", "R", "--", "--no_aug"],
                         capture_output=True, text=True, cwd=ROOT)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and len(lines) == 3 * 2 * (1 + 2)  # settings x seeds x (retrain + 2 lrs)
    assert sum("--unlearn retrain" in l for l in lines) == 6 and all("--no_aug" in l for l in lines)
    assert any("--save_dir R/class1/GA-unlearn_lr1e-3-seed2" in l for l in lines)
    bad = subprocess.run([sys.executable, "-m", "scripts.make_jobs", "--model", "m.pt", "--methods", "GA"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--classes" in bad.stderr
    alone = subprocess.run([sys.executable, "-m", "scripts.make_jobs", "--model", "m.pt", "--methods", "IU",
                            "--random", "100", "--grid", "variant=legacy,default", "--no_retrain"],
                           capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
    assert len(alone) == 2 and not any("retrain" in l for l in alone)  # the released and the corrected IU only


@pytest.mark.slow
def test_tiny_quickstart_end_to_end(tmp_path):
    res = sh("scripts/quickstart.sh", "--tiny", env={"OUT": str(tmp_path / "qs")})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    table = (tmp_path / "qs_tiny" / "table.md").read_text()
    assert all(f"| {m} |" in table for m in ("none", "retrain", "FT", "GA"))
    assert (tmp_path / "qs_tiny" / "bars.png").stat().st_size > 0
    ga = json.load(open(tmp_path / "qs_tiny" / "class3" / "GA" / "results.json"))
    none = json.load(open(tmp_path / "qs_tiny" / "class3" / "none" / "results.json"))
    assert ga["metrics"]["UA"] > none["metrics"]["UA"]


def test_setup_env_uses_a_complete_interpreter_and_builds_only_when_something_is_missing(tmp_path):
    # This interpreter has every package (it runs the tests): it is used as it is, nothing is built.
    have = sh("scripts/setup_env.sh", "--check", env={"PYTHON": sys.executable})
    assert have.returncode == 0 and os.path.samefile(have.stdout.strip(), sys.executable), have.stderr
    # A requirement no interpreter meets: --check says it would build .venv, and names what is missing.
    req = tmp_path / "requirements.txt"
    req.write_text("numpy>=1\nno-such-package-mu-wdd>=1.0\n")
    miss = sh("scripts/setup_env.sh", "--check", env={"PYTHON": sys.executable, "REQUIREMENTS": str(req)})
    assert miss.returncode == 1 and miss.stdout == ""
    assert "would build .venv" in miss.stderr and "no-such-package-mu-wdd: not installed" in miss.stderr


def test_check_env_compares_release_ranges():
    from scripts import check_env
    assert check_env.admissible("2.11.0+cu130", ">=2.2,<2.15") and not check_env.admissible("2.15.0", "<2.15")
    assert check_env.admissible("1.26.4", ">=1.24,<3") and not check_env.admissible("0.16.1", ">=0.17")

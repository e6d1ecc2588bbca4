"""Several runs at once (smjax/parallel.py): the same runs as one at a time, the order they wait
for, the cores they get, and a stop that checkpoints every running run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import pytest

from experiments import digits
from smjax import checkpoint, cli, parallel, run, tickets
from smjax.workdir import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_core_shares_are_disjoint_and_cover_the_cores():
  assert parallel.core_shares(2, [0, 1]) == [{0}, {1}]
  assert parallel.core_shares(2, [4, 0, 1, 2, 3]) == [{0, 2, 4}, {1, 3}]
  assert parallel.core_shares(3, [7]) == [{7}, {7}, {7}]  # fewer cores than jobs: shared
  shares = parallel.core_shares(2)
  assert set().union(*shares) == os.sched_getaffinity(0) or len(os.sched_getaffinity(0)) < 2


def test_a_run_waits_for_the_runs_it_starts_from(tmp_path):
  config = digits.get_config()
  configs = run.regime_configs(config, tmp_path)
  runs = {tmp_path / r: configs[r] for r in run.all_regimes(config)}
  assert parallel.dependencies(runs) == {tmp_path / "mask": set(), tmp_path / "weight": set(),
                                         tmp_path / "finetune": {tmp_path / "mask"}}
  rounds = tickets.round_configs(config.replace(ticket_rounds=2, rewind_epoch=1), tmp_path)
  needs = parallel.dependencies({tmp_path / name: c for name, c in rounds.items()})
  assert needs[tmp_path / "round0"] == set()
  assert needs[tmp_path / "round1_random"] == {tmp_path / "round0"}
  assert needs[tmp_path / "round2"] == needs[tmp_path / "round2_reinit"] == {
      tmp_path / "round1", tmp_path / "round0"}  # pruned from round 1, rewound to round 0


@pytest.mark.parametrize("args", [["--jobs", "0"], ["--jobs", "2", "--regime", "mask"],
                                  ["--jobs", "2", "--coordinator", "localhost:1234"]])
def test_bad_jobs_are_refused_before_anything_is_written(tmp_path, capsys, args):
  with pytest.raises(SystemExit) as exit_:
    cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path / "run"), *args])
  assert exit_.value.code == 2 and "--jobs" in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_jobs_train_the_same_runs_as_one(tmp_path):
  """Every metric and every checkpointed array of a study with --jobs 2 equals the study's
  run one run at a time: a worker process is the same run, only elsewhere."""
  sets = ["model=lenet300-100", "epochs=2", "finetune_epochs=2", "batch_size=64", "val_size=100"]
  args = [a for s in sets for a in ("--set", s)] + ["--seeds", "0", "1"]  # 6 runs on 2 workers
  for name, jobs in (("one", "1"), ("two", "2")):
    assert cli.main(digits.get_config, "digits",
                    ["--workdir", str(tmp_path / name), "--jobs", jobs, *args]) == 0
  timing = ("seconds", "images_per_second")
  for seed in (0, 1):
    for regime in ("mask", "weight", "finetune"):
      one, two = (tmp_path / name / f"seed{seed}" / regime for name in ("one", "two"))
      assert ([{k: v for k, v in m.items() if k not in timing} for m in read_metrics(one)] ==
              [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(two)])
      a, b = (checkpoint.restore(d, which="latest") for d in (one, two))
      chex.assert_trees_all_equal([a["state"], a["masks"]], [b["state"], b["masks"]])
  assert (tmp_path / "two" / "report" / "study.json").exists()


@pytest.mark.slow
def test_sigterm_checkpoints_every_running_run_and_the_rerun_goes_on(tmp_path):
  """Two runs training side by side: SIGTERM to the study stops both at a checkpoint, exits 0
  and starts nothing new; the same command then resumes both where they stopped."""
  command = [sys.executable, "-m", "experiments.digits", "--workdir", str(tmp_path), "--jobs", "2",
             "--set", "model=lenet300-100", "--set", "epochs=1000", "--set", "val_size=100"]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  mask, weight, finetune = (tmp_path / r for r in ("mask", "weight", "finetune"))

  def start_and_stop_after(epochs: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while min(len(read_metrics(mask)), len(read_metrics(weight))) < epochs:
      assert process.poll() is None and time.monotonic() < deadline, process.communicate()
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)

  first = start_and_stop_after(2)
  assert first.returncode == 0 and "rerun the same command to resume" in first.stderr, first.stderr
  stopped = {r: len(read_metrics(r)) for r in (mask, weight)}
  for r in (mask, weight):  # the state at the stop is on disk, past the last finished epoch
    assert checkpoint.restore(r, which="latest")["step"] >= read_metrics(r)[-1]["step"]
    assert stopped[r] < 1000
  assert not finetune.exists()

  second = start_and_stop_after(max(stopped.values()) + 1)
  assert second.returncode == 0, second.stderr
  for r in (mask, weight):  # resumed: no epoch run twice, none skipped
    epochs = [m["epoch"] for m in read_metrics(r)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > stopped[r]


@pytest.mark.slow
def test_an_error_in_a_worker_is_the_studys_one_error_line(tmp_path, capfd, monkeypatch):
  monkeypatch.delenv("SMJAX_DATA_DIR", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "nothing"))
  args = ["--workdir", str(tmp_path / "study"), "--jobs", "2", "--set", "dataset=mnist",
          "--set", f"data_dir={tmp_path / 'nothing'}", "--set", "model=lenet300-100"]
  assert cli.main(digits.get_config, "digits", args) == 2
  err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
  assert len(err) == 1 and err[0].startswith("error: ") and "mnist" in err[0].lower(), err
  assert not list((tmp_path / "study").glob("*/metrics.jsonl"))


@pytest.mark.slow
def test_two_jobs_equal_one_for_adam_weights_and_bernoulli_masks_on_mnist(tmp_path):
  """The Zhou et al. recipe (Bernoulli masks, SGD 100 on the scores, Adam on the weights) on
  MNIST, one device per process as a user runs it: --jobs 2 (run first, each worker compiling
  into its own fresh cache) equals --jobs 1 bit for bit in every metric."""
  from experiments import zhou
  data_dir = ROOT.parent / "shared" / "data"
  if not (data_dir / "mnist").is_dir():
    pytest.skip("needs the MNIST files in ../shared/data")
  sets = [f"data_dir={data_dir}", "epochs=1", "finetune_epochs=1", "sampled_mask_evals=2",
          "original_finetune=false"]
  args = [a for s in sets for a in ("--set", s)] + ["--seeds", "1"]  # 3 runs on 2 workers
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  for jobs in ("2", "1"):
    subprocess.run([sys.executable, "-m", "experiments.zhou", "--workdir", str(tmp_path / jobs),
                    "--jobs", jobs, *args], cwd=ROOT, check=True, capture_output=True,
                   env={**env, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / f"cache{jobs}")})
  assert zhou.get_config().optimizer == "adam" and zhou.get_config().estimator == "bernoulli"
  timing = ("seconds", "images_per_second")
  for seed in (1,):
    for regime in ("mask", "weight", "finetune"):
      one, two = (tmp_path / jobs / f"seed{seed}" / regime for jobs in ("1", "2"))
      assert ([{k: v for k, v in m.items() if k not in timing} for m in read_metrics(one)] ==
              [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(two)]), regime

"""Kills, stops, damaged checkpoints, NaNs and bad input: nothing lost, nothing silently wrong."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import digits
from smjax import checkpoint, cli, run

ROOT = Path(__file__).parents[1]
SETS = ["model=lenet300-100", "batch_size=32", "epochs=8", "val_size=100"]
ARGS = ["--regime", "mask", *[a for s in SETS for a in ("--set", s)]]
TIMING = {"seconds", "images_per_second"}


def command(workdir):
  return [sys.executable, "-m", "experiments.digits", "--workdir", str(workdir), *ARGS]


def start(workdir):
  return subprocess.Popen(command(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def wait_for_epochs(workdir, n, proc, timeout=120):
  deadline = time.time() + timeout
  while len(run.read_metrics(workdir)) < n:
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline
    time.sleep(0.02)


def assert_same_run(a, b):
  ma, mb = run.read_metrics(a), run.read_metrics(b)
  assert [m["epoch"] for m in mb] == list(range(1, 9))
  assert [{k: v for k, v in m.items() if k not in TIMING} for m in ma] == \
      [{k: v for k, v in m.items() if k not in TIMING} for m in mb]
  ca, cb = checkpoint.restore(a, which="latest"), checkpoint.restore(b, which="latest")
  assert ca["step"] == cb["step"]
  for x, y in zip(jax.tree.leaves((ca["state"], ca["masks"])),
                  jax.tree.leaves((cb["state"], cb["masks"])), strict=True):
    assert np.array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run in a subprocess, like the interrupted ones."""
  workdir = tmp_path_factory.mktemp("reference")
  subprocess.run(command(workdir), cwd=ROOT, check=True, capture_output=True)
  return workdir


def test_same_seed_same_metrics_and_checkpoints(reference, tmp_path):
  assert cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path), *ARGS]) == 0
  assert_same_run(reference, tmp_path)


def test_sigkill_at_arbitrary_moments_then_resume(reference, tmp_path):
  rng = np.random.default_rng(0)
  for epochs_seen in (1, 3, 5):
    proc = start(tmp_path)
    wait_for_epochs(tmp_path, epochs_seen, proc)
    time.sleep(rng.uniform(0, 0.3))  # anywhere: mid-epoch, mid-checkpoint, mid-metrics line
    proc.kill()
    assert proc.wait() == -signal.SIGKILL  # it was still running
  subprocess.run(command(tmp_path), cwd=ROOT, check=True, capture_output=True)
  assert_same_run(reference, tmp_path)


def test_sigterm_checkpoints_and_exits_0(reference, tmp_path):
  proc = start(tmp_path)
  wait_for_epochs(tmp_path, 2, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 0
  assert "rerun the same command to resume" in err
  subprocess.run(command(tmp_path), cwd=ROOT, check=True, capture_output=True)
  assert_same_run(reference, tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_newest_checkpoint_falls_back(reference, tmp_path, capsys, damage):
  import shutil
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  newest = tmp_path / "checkpoints" / str(max(checkpoint.steps(tmp_path)))
  if damage == "truncate":
    for f in (newest / "state").rglob("*"):
      if f.is_file() and f.stat().st_size > 100:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  else:
    shutil.rmtree(newest)
  assert cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path), *ARGS]) == 0
  err = capsys.readouterr().err
  assert "run again" in err
  if damage == "truncate":
    assert "unreadable" in err and (tmp_path / "checkpoints_damaged").is_dir()
  assert_same_run(reference, tmp_path)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, capsys):
  args = ["--workdir", str(tmp_path), "--regime", "weight", "--set", "model=lenet300-100",
          "--set", "lr=1e30", "--set", "epochs=2"]
  assert cli.main(digits.get_config, "digits", args) == 2
  err = capsys.readouterr().err.strip()
  assert "non-finite training loss at epoch 1, step" in err and len(err.splitlines()) == 1
  assert not list((tmp_path / "checkpoints").glob("[0-9]*"))
  assert run.read_metrics(tmp_path) == []


def test_finetune_from_the_wrong_run_is_refused(reference, tmp_path, capsys):
  wrong_model = ["--set", f"mask_run={reference}", "--set", "model=conv2"]
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(tmp_path / "a"), "--regime", "finetune", *wrong_model]) == 2
  assert "model='lenet300-100'" in capsys.readouterr().err
  weight = tmp_path / "w"
  cli.main(digits.get_config, "digits", ["--workdir", str(weight), "--regime", "weight",
                                         "--set", "model=lenet300-100", "--set", "epochs=1"])
  capsys.readouterr()
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(tmp_path / "b"), "--regime", "finetune", "--set",
                   f"mask_run={weight}", "--set", "model=lenet300-100"]) == 2
  assert "is a 'weight' run" in capsys.readouterr().err
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

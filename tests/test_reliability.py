"""Kills, stops, damaged checkpoints, NaNs and bad input: nothing lost, nothing silently wrong."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from experiments import digits
from smjax import checkpoint, cli, run
from smjax.writer import RunWriter

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
  chex.assert_trees_all_equal((ca["state"], ca["masks"]), (cb["state"], cb["masks"]))


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
  rerun = subprocess.run(command(tmp_path), cwd=ROOT, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
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


def truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["state", "metrics", "delete", "temporary"])
def test_damaged_newest_checkpoint_falls_back(reference, tmp_path, capsys, damage):
  import shutil
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  newest = tmp_path / "checkpoints" / str(max(checkpoint.steps(tmp_path)))
  metrics = tmp_path / "metrics.jsonl"
  if damage in ("state", "metrics"):  # killed after the last checkpoint, before its metrics line
    for f in (newest / damage).rglob("*"):
      if f.is_file() and f.stat().st_size > 100:
        truncate(f)
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
  elif damage == "delete":  # a finished run whose last checkpoint is gone is not finished
    shutil.rmtree(newest)
  else:  # killed while orbax wrote the last checkpoint: half a temporary directory
    half = newest.with_name(newest.name + ".orbax-checkpoint-tmp-1234")
    newest.rename(half)
    shutil.rmtree(half / "state")
  assert cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path), *ARGS]) == 0
  err = capsys.readouterr().err
  if damage in ("state", "metrics"):
    assert f"checkpoint {newest} is unreadable" in err
    assert (tmp_path / "checkpoints_damaged" / newest.name).is_dir()
  else:
    assert "run again" in err
  assert_same_run(reference, tmp_path)


def test_damage_to_any_checkpoint_file_is_found_or_harmless(reference, tmp_path, capsys):
  """Every file orbax writes, cut in half and deleted in turn: the checkpoint either restores
  exactly or is reported unreadable (and the others stay readable); never a raw error."""
  import shutil
  from smjax import inspect
  newest = max(checkpoint.steps(reference))
  original = checkpoint.restore(reference, step=newest)
  files = sorted(p.relative_to(reference) for p in (reference / "checkpoints" / str(newest)).rglob("*")
                 if p.is_file())
  assert {"_CHECKPOINT_METADATA", "metrics/metrics", "meta/metadata", "state/_METADATA"} <= \
      {str(f).removeprefix(f"checkpoints/{newest}/") for f in files}
  found = set()
  for rel in files:
    for damage in (truncate, Path.unlink):
      work = tmp_path / f"{rel.name}-{damage.__name__}"
      shutil.copytree(reference, work)
      damage(work / rel)
      try:
        restored = checkpoint.restore(work, step=newest)
      except checkpoint.CheckpointError as err:
        assert f"checkpoint {work / 'checkpoints' / str(newest)} is unreadable" in str(err)
        found.add(str(rel))
        unreadable = True
      else:
        unreadable = False
        chex.assert_trees_all_equal((original["state"], original["masks"]),
                                    (restored["state"], restored["masks"]), custom_message=str(rel))
      try:
        checkpoint.restore(work, which="best")
      except checkpoint.CheckpointError:
        assert unreadable
      report = inspect.describe(work, step=min(checkpoint.steps(work)))  # reads the rest
      if rel.parts[-2] in ("meta", "metrics") and unreadable:
        assert f"{newest:>10}  unreadable" in report
      shutil.rmtree(work)
  assert any("state/" in f for f in found) and any("masks/" in f for f in found)
  assert f"checkpoints/{newest}/meta/metadata" in found


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, capsys):
  args = ["--workdir", str(tmp_path), "--regime", "weight", "--set", "model=lenet300-100",
          "--set", "lr=1e30", "--set", "epochs=2"]
  assert cli.main(digits.get_config, "digits", args) == 2
  err = capsys.readouterr().err.strip()
  assert "non-finite training loss at epoch 1, step" in err and len(err.splitlines()) == 1
  assert "no checkpoint had been written" in err and "None" not in err
  assert not list((tmp_path / "checkpoints").glob("[0-9]*"))
  assert run.read_metrics(tmp_path) == []


def test_finetune_from_the_wrong_run_is_refused(reference, tmp_path, capsys):
  wrong_model = ["--set", f"mask_run={reference}", "--set", "model=conv2"]
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(tmp_path / "a"), "--regime", "finetune", *wrong_model]) == 2
  assert "model='lenet300-100'" in capsys.readouterr().err
  capsys.readouterr()
  finetune = tmp_path / "a" / "f"  # a fine-tune is no start (a mask run is; a weight run too)
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(finetune), "--regime", "finetune", "--set", f"mask_run={reference}",
                   "--set", "model=lenet300-100", "--set", "epochs=1"]) == 0
  capsys.readouterr()
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(tmp_path / "b"), "--regime", "finetune", "--set",
                   f"mask_run={finetune}", "--set", "model=lenet300-100"]) == 2
  assert "is a 'finetune' run" in capsys.readouterr().err
  assert not (tmp_path / "b").exists()


def test_a_finite_but_exploding_loss_is_warned_about(tmp_path, capsys):
  def writer(first):
    w = RunWriter(tmp_path, tag="t", metric="val_accuracy", num_classes=10, tensorboard=False)
    w.lines = first
    return w
  first = [{"epoch": 1, "train_loss": 0.5}]
  writer(first)._warn_if_diverging({"epoch": 3, "train_loss": 4.9})
  assert capsys.readouterr().err == ""
  writer(first)._warn_if_diverging({"epoch": 3, "train_loss": 5.1})  # > 10 x 0.5
  assert "epoch 3's mean training loss 5.1" in capsys.readouterr().err
  writer([])._warn_if_diverging({"epoch": 1, "train_loss": 1e30})  # > 10 x ln(10)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "likely diverging" in err[0]


def test_a_damaged_config_json_is_named_before_any_setup(tmp_path, capsys, monkeypatch):
  (tmp_path / "config.json").write_text('{"seed": 0, "mo')
  monkeypatch.setattr(run.data, "load", lambda *a, **k: pytest.fail("loaded data first"))
  assert cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path), "--regime", "mask"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(tmp_path / "config.json") in err[0] and "delete it" in err[0]


@pytest.mark.parametrize("where", ["file", "under_a_file", "another_config"])
def test_bad_workdirs_are_refused_before_any_setup(tmp_path, capsys, monkeypatch, where):
  monkeypatch.setattr(run.data, "load", lambda *a, **k: pytest.fail("loaded data first"))
  target = tmp_path / "run"
  if where == "another_config":  # a single run's and --regime all's mask run, each trained
    for folder in (target, target / "mask"):
      folder.mkdir()
      (folder / "config.json").write_text(json.dumps({"seed": 5}))
      (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 1}) + "\n")
  else:
    target.write_text("not a folder")
    target = target if where == "file" else target / "sub"
  for regime in ("mask", "all"):
    assert cli.main(digits.get_config, "digits", ["--workdir", str(target), "--regime", regime]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert {"file": "is a file", "under_a_file": "is a file",
            "another_config": "differs in: "}[where] in err[0]


def test_an_interrupted_report_leaves_the_previous_one(tmp_path):
  from smjax import workdir
  (tmp_path / "report").mkdir()
  (tmp_path / "report" / "summary.md").write_text("previous")
  with pytest.raises(KeyboardInterrupt):
    with workdir.replaced_atomically(tmp_path / "report") as out:
      (out / "summary.md").write_text("half")
      raise KeyboardInterrupt
  assert [p.name for p in tmp_path.iterdir()] == ["report"]
  assert (tmp_path / "report" / "summary.md").read_text() == "previous"
  with workdir.replaced_atomically(tmp_path / "report") as out:
    (out / "curves.png").write_text("new")
  assert [p.name for p in (tmp_path / "report").iterdir()] == ["curves.png"]
  assert [p.name for p in tmp_path.iterdir()] == ["report"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_training_gives_a_true_message(tmp_path, capsys, monkeypatch, signum):
  # the handler the CLI installed, called as the interpreter would on delivery (synchronously,
  # so the test does not depend on when a loaded machine delivers the signal)
  monkeypatch.setattr(run, "train_all", lambda *a, **k: signal.getsignal(signum)(signum, None))
  before = signal.getsignal(signal.SIGTERM)
  # Python's own Ctrl-C handler, also where this process was started with SIGINT ignored
  previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    assert cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path)]) == 130
  finally:
    signal.signal(signal.SIGINT, previous_int)
  err = capsys.readouterr().err
  assert "interrupted outside training" in err and "before training started" not in err
  assert signal.getsignal(signal.SIGTERM) == before


def test_orbax_warnings_a_user_cannot_act_on_are_dropped(reference, caplog):
  import logging
  with caplog.at_level(logging.WARNING, logger="absl"):  # whatever an earlier CLI call set
    checkpoint.restore(reference)  # a read-only manager
    for text in checkpoint.EXPECTED_WARNINGS:
      logging.getLogger("absl").warning(f"orbax says: {text}")
    logging.getLogger("absl").warning("a warning that matters")
  assert [r.getMessage() for r in caplog.records] == ["a warning that matters"]


@pytest.mark.parametrize("bad, message", [
    (["--set", "lr=Infinity"], "'lr' expects a finite number"),
    (["--set", "lr=1e999"], "'lr' expects a finite number"),
    (["--set", "seed=-1"], "seed must be >= 0"),
])
def test_values_that_cannot_train_are_refused_before_anything_is_written(tmp_path, capsys, bad, message):
  assert cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path / "w"), *ARGS, *bad]) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "w").exists()


def test_negative_seeds_are_refused_by_the_parser(tmp_path, capsys):
  with pytest.raises(SystemExit):
    cli.main(digits.get_config, "digits", ["--workdir", str(tmp_path), "--seeds", "-1"])
  assert "--seeds takes seeds >= 0" in capsys.readouterr().err


def test_a_run_that_trained_nothing_does_not_block_a_corrected_config(tmp_path, capsys):
  from smjax import workdir as workdir_lib
  workdir = tmp_path / "run"
  workdir_lib.claim(digits.get_config().replace(model="lenet300-100", lr=123.0), workdir)
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(workdir), *ARGS, "--set", "epochs=1"]) == 0
  assert json.loads((workdir / "config.json").read_text())["lr"] == digits.get_config().lr
  assert len(run.read_metrics(workdir)) == 1


def test_a_moved_study_is_still_the_same_study(tmp_path, capsys):
  sets = ["model=lenet300-100", "batch_size=32", "epochs=1", "finetune_epochs=1", "val_size=100"]
  args = lambda w: ["--workdir", str(w), *[a for s in sets for a in ("--set", s)]]
  assert cli.main(digits.get_config, "digits", args(tmp_path / "a")) == 0
  stored = json.loads((tmp_path / "a" / "finetune" / "config.json").read_text())
  assert stored["mask_run"] == "../mask"
  (tmp_path / "a").rename(tmp_path / "b")
  capsys.readouterr()
  assert cli.main(digits.get_config, "digits", args(tmp_path / "b")) == 0
  out = capsys.readouterr().out
  assert out.count("nothing to do") == 3 and "differs" not in out
  # A run written before paths were stored relative to it: its path as typed still matches.
  old = {**stored, "mask_run": str(tmp_path / "b" / "mask")}
  del old["relative_paths"]
  (tmp_path / "b" / "finetune" / "config.json").write_text(json.dumps(old))
  assert cli.main(digits.get_config, "digits", args(tmp_path / "b")) == 0


def test_a_model_that_does_not_fit_the_images_is_one_error_line(tmp_path, capsys):
  args = ["--regime", "mask", "--workdir", str(tmp_path / "w"), "--set", "model=lenet5"]
  assert cli.main(digits.get_config, "digits", args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "'lenet5' does not fit digits's 8x8x1 images" in err[0]
  assert not (tmp_path / "w" / "config.json").exists()


def test_a_report_of_a_file_is_one_error_line(tmp_path, capsys):
  from smjax import report
  (tmp_path / "f").write_text("x")
  assert report.main([str(tmp_path / "f")]) == 2
  assert "is not a directory" in capsys.readouterr().err


def test_a_damaged_gzip_is_named(tmp_path):
  from smjax import dataset_files
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(b"\x1f\x8b\x08\x00garbage")
  with pytest.raises(dataset_files.FileError, match=f"{path}: not a readable gzip file"):
    dataset_files.parse_idx(path.read_bytes(), path)


def test_a_full_disk_while_checkpointing_is_one_error_line(tmp_path, capsys, monkeypatch):
  import errno
  import orbax.checkpoint as ocp
  calls = []

  def full_after_one(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) > 1:
      (Path(self.directory) / f"{step}.orbax-checkpoint-tmp-1").mkdir()
      raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, step, *args, **kwargs)

  original = ocp.CheckpointManager.save
  monkeypatch.setattr(ocp.CheckpointManager, "save", full_after_one)
  workdir = tmp_path / "run"
  assert cli.main(digits.get_config, "digits", ["--workdir", str(workdir), *ARGS]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: no space left on the device of "), err
  assert "MiB free" in err[0] and "a checkpoint takes" in err[0]
  assert [m["epoch"] for m in run.read_metrics(workdir)] == [1]
  assert not list((workdir / "checkpoints").glob("*tmp*"))


def test_a_full_disk_before_config_json_leaves_no_temporary(tmp_path, capsys, monkeypatch):
  import errno
  from smjax import workdir as workdir_lib

  def full(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(self))

  monkeypatch.setattr(Path, "write_text", full)
  workdir = tmp_path / "run"
  assert cli.main(digits.get_config, "digits", ["--workdir", str(workdir), *ARGS]) == 2
  monkeypatch.undo()
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no space left" in err[0]
  assert not (workdir / "config.json").exists() and not (workdir / "config.json.tmp").exists()
  assert workdir_lib.LOCK_FILE  # the lock of a run refused before writing leaves nothing either
  assert not workdir.exists() or not any(p.name != workdir_lib.LOCK_FILE for p in workdir.iterdir())


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
  from smjax import workdir as workdir_lib
  (tmp_path / "report").mkdir()
  dead = tmp_path / "report.tmp-999999999"
  mine = tmp_path / f"report.tmp-{__import__('os').getpid()}"
  dead.mkdir()
  mine.mkdir()
  workdir_lib.remove_stale_temporaries(tmp_path / "report")
  assert not dead.exists() and mine.exists()


def test_a_val_size_that_leaves_nothing_is_one_error_line_in_our_words(tmp_path, capsys):
  assert cli.main(digits.get_config, "digits",
                  ["--workdir", str(tmp_path / "w"), *ARGS, "--set", "val_size=5000"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: val_size 5000 leaves no training examples: digits has 1437 training "
                 "examples; use a count below that or a fraction in (0, 1)"]


def test_more_jobs_than_cores_are_capped_with_a_warning(tmp_path, capsys, monkeypatch):
  import os
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
  config = digits.get_config().replace(model="lenet300-100", epochs=1, val_size=100.0)
  run.train_runs({tmp_path / "a": config.replace(mode="weight")}, jobs=64)
  assert "--jobs 64 on 1 CPU cores runs 1 at a time" in capsys.readouterr().err
  assert len(run.read_metrics(tmp_path / "a")) == 1

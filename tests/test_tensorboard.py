"""TensorBoard event files hold the scalars of metrics.jsonl, read back by TensorBoard's reader."""

import shutil

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import digits
from smjax import cli, run

SETS = ["model=lenet300-100", "batch_size=64", "epochs=2", "val_size=100",
        "tensorboard_every_steps=5"]


def train(workdir, *extra):
  sets = SETS + list(extra)
  args = ["--workdir", str(workdir), "--regime", "weight", *[a for s in sets for a in ("--set", s)]]
  assert cli.main(digits.get_config, "digits", args) == 0


def events(workdir):
  accumulator = EventAccumulator(str(workdir), size_guidance={"scalars": 0})  # 0: keep all
  accumulator.Reload()
  return accumulator


def test_event_scalars_equal_the_metrics_lines_and_a_resume_leaves_no_duplicates(tmp_path):
  workdir = tmp_path / "weight"
  train(workdir, "keep_every_epochs=1")
  shutil.rmtree(workdir / "checkpoints" / str(run.read_metrics(workdir)[-1]["step"]))
  # a second session redoes epoch 2 (its checkpoint is gone) and goes on to epoch 3
  train(workdir, "keep_every_epochs=1", "epochs=3")
  lines = run.read_metrics(workdir)
  logged = events(workdir)
  keys = [k for k, v in lines[0].items()
          if k not in ("epoch", "step", "mode") and isinstance(v, (int, float))]
  assert {"train_loss", "test_accuracy", "val_accuracy", "lr", "masked_fraction"} <= set(keys)
  assert set(keys) <= set(logged.Tags()["scalars"])
  for key in keys:
    scalars = logged.Scalars(key)
    assert [s.step for s in scalars] == [m["step"] for m in lines]  # one per epoch, no repeats
    np.testing.assert_array_equal([s.value for s in scalars],
                                  np.float32([m[key] for m in lines]))
  steps = logged.Scalars("train_loss_step")
  assert [s.step for s in steps] == list(range(5, lines[-1]["step"] + 1, 5))


def test_tensorboard_off_writes_no_event_file(tmp_path):
  train(tmp_path / "weight", "tensorboard=false")
  assert not list((tmp_path / "weight").glob("events.out.tfevents*"))

"""One writer per workdir, and no process outliving the command that started it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import digits
from smjax import cli, workdir as workdir_lib
from smjax.workdir import RunError, read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LONG = ["--set", "model=lenet300-100", "--set", "epochs=1000", "--set", "val_size=100"]


def wait_for(condition, process, seconds=240):
  deadline = time.monotonic() + seconds
  while not condition():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.2)


def children(pid: int) -> list[int]:
  """The live processes whose parent is `pid` (from /proc)."""
  found = []
  for entry in Path("/proc").iterdir():
    if entry.name.isdigit():
      try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid and fields[0] != "Z":
        found.append(int(entry.name))
  return found


def alive(pid: int) -> bool:
  try:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except OSError:
    return False
  return state != "Z"


def test_the_lock_is_reentrant_and_dropped_with_its_block(tmp_path):
  with workdir_lib.locked(tmp_path / "run"):
    with workdir_lib.locked(tmp_path / "run"):
      pass
    assert f"process {os.getpid()}" in (tmp_path / "run" / ".lock").read_text()
  with workdir_lib.locked(tmp_path / "run"):  # free again
    pass
  (tmp_path / "file").write_text("x")
  with pytest.raises(RunError, match="is a file, not a directory"):
    with workdir_lib.locked(tmp_path / "file"):
      pass


def test_a_second_command_on_a_workdir_in_use_is_refused_at_once(tmp_path, capsys):
  """The same study started twice: the second is refused with one line naming the first,
  writes nothing, and the first trains on undisturbed."""
  workdir = tmp_path / "study"
  command = [sys.executable, "-m", "experiments.digits", "--workdir", str(workdir), *LONG]
  first = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: len(read_metrics(workdir / "mask")) >= 1, first)
    assert cli.main(digits.get_config, "digits", ["--workdir", str(workdir), *LONG]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by process {first.pid}" in err[0], err
    # One run of that study, addressed on its own, is refused too.
    single = ["--regime", "mask", "--workdir", str(workdir / "mask"), *LONG]
    assert cli.main(digits.get_config, "digits", single) == 2
    assert "in use by process" in capsys.readouterr().err
    epochs = len(read_metrics(workdir / "mask"))
    wait_for(lambda: len(read_metrics(workdir / "mask")) > epochs, first)
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
  lines = [m["epoch"] for m in read_metrics(workdir / "mask")]
  assert lines == list(range(1, len(lines) + 1))


def test_sigkill_of_a_jobs_parent_leaves_no_process_behind(tmp_path):
  """SIGKILL of `--jobs 2`: both workers checkpoint and exit on their own; the rerun resumes."""
  command = [sys.executable, "-m", "experiments.digits", "--workdir", str(tmp_path), "--jobs", "2",
             *LONG]
  parent = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  mask, weight = tmp_path / "mask", tmp_path / "weight"
  wait_for(lambda: min(len(read_metrics(mask)), len(read_metrics(weight))) >= 1, parent)
  spawned = children(parent.pid)
  assert len(spawned) >= 2
  parent.kill()
  parent.wait()
  deadline = time.monotonic() + 90  # each worker: its next step, a checkpoint, then exit
  while any(map(alive, spawned)) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not any(map(alive, spawned)), [p for p in spawned if alive(p)]
  before = {r: len(read_metrics(r)) for r in (mask, weight)}
  rerun = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: all(len(read_metrics(r)) > before[r] for r in (mask, weight)), rerun)
  finally:
    rerun.send_signal(signal.SIGTERM)
    rerun.communicate(timeout=120)
  for r in (mask, weight):
    epochs = [m["epoch"] for m in read_metrics(r)]
    assert epochs == list(range(1, len(epochs) + 1))

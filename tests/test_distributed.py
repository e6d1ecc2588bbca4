"""One run over two local processes (2 CPU devices each) against one process with 4 devices."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import pytest

from smjax import checkpoint, distributed, run

ROOT = Path(__file__).parents[1]
SETS = ["model=lenet300-100", "batch_size=32", "epochs=4", "val_size=100"]
ARGS = ["--regime", "weight", *[a for s in SETS for a in ("--set", s)]]
TIMING = {"seconds", "images_per_second"}
pytestmark = pytest.mark.slow


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(workdir, devices, *extra, env=None):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "PYTHONUNBUFFERED": "1", **(env or {})}
  return subprocess.Popen([sys.executable, "-m", "experiments.digits", "--workdir", str(workdir),
                           *ARGS, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def start_two(workdir, port=None, *extra, env=None):
  port = port or free_port()
  cluster = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--distributed-timeout", "20"]
  return [start(workdir, 2, *cluster, "--process-id", str(i), *extra, env=env) for i in (0, 1)]


def finish(procs, timeout=240):
  outs = [p.communicate(timeout=timeout) for p in procs]
  assert [p.returncode for p in procs] == [0] * len(procs), outs
  return outs


def state(workdir):
  return jax.tree.leaves(checkpoint.restore(workdir, which="latest")["state"])


def metrics(workdir):
  return [{k: v for k, v in m.items() if k not in TIMING} for m in run.read_metrics(workdir)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
  finish([start(one, 4)])
  outs = finish(start_two(two))
  return {"one": one, "two": two, "outs": outs}


def test_two_processes_give_the_one_process_run(runs):
  """Same examples on the same global devices, so the same run; the cross-process mean of the
  gradients sums in another order than the in-process one, hence 1e-6, not bit for bit."""
  a, b = metrics(runs["one"]), metrics(runs["two"])
  assert [m["epoch"] for m in b] == [1, 2, 3, 4]
  for ma, mb in zip(a, b, strict=True):
    assert ma.keys() == mb.keys()
    for key in ma:
      close = pytest.approx(mb[key], rel=1e-6, abs=1e-6) if isinstance(ma[key], float) else mb[key]
      assert ma[key] == close, key
  chex.assert_trees_all_close(state(runs["one"]), state(runs["two"]), rtol=1e-6, atol=1e-6)
  (out0, _), (out1, _) = runs["outs"]
  assert out0.count("[weight] epoch") == 4 and "[weight] epoch" not in out1  # process 0 reports


def test_two_processes_run_every_regime_and_write_the_report(tmp_path):
  """--regime all: process 0 writes the report (reading the checkpoints alone) while the other
  waits for it; both exit 0."""
  sets = ["--regime", "all", "--set", "epochs=1", "--set", "finetune_epochs=1"]
  outs = finish(start_two(tmp_path, None, *sets))
  assert (tmp_path / "report" / "summary.md").exists(), outs
  assert all(run.read_metrics(tmp_path / r) for r in ("mask", "weight", "finetune"))


def test_sigterm_to_one_process_stops_both_and_all_resume(runs, tmp_path):
  procs = start_two(tmp_path)
  deadline = time.time() + 180
  while len(run.read_metrics(tmp_path)) < 2:
    assert time.time() < deadline and all(p.poll() is None for p in procs)
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outs = finish(procs, timeout=60)
  assert "rerun the same command to resume" in outs[0][1]
  assert len(run.read_metrics(tmp_path)) < 4
  finish(start_two(tmp_path))
  assert metrics(tmp_path) == metrics(runs["two"])
  chex.assert_trees_all_equal(state(tmp_path), state(runs["two"]))


def test_sigkill_of_one_process_ends_the_other_and_all_resume(runs, tmp_path):
  procs = start_two(tmp_path)
  deadline = time.time() + 180
  while len(run.read_metrics(tmp_path)) < 2:
    assert time.time() < deadline and all(p.poll() is None for p in procs)
    time.sleep(0.05)
  procs[1].kill()
  killed = time.time()
  _, err = procs[0].communicate(timeout=90)  # its watchdog: no sign of process 1 for 20 s
  assert procs[0].returncode == 2 and time.time() - killed < 60, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "another process of this multi-process run is gone" in errors[0]
  assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
  finish(start_two(tmp_path))
  assert metrics(tmp_path) == metrics(runs["two"])
  chex.assert_trees_all_equal(state(tmp_path), state(runs["two"]))


def test_an_unreachable_coordinator_is_one_error_line_in_bounded_time(tmp_path):
  began = time.time()
  proc = start(tmp_path, 2, "--coordinator", f"localhost:{free_port()}", "--num-processes", "2",
               "--process-id", "1", "--distributed-timeout", "5")
  _, err = proc.communicate(timeout=120)
  lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
  assert proc.returncode == 2 and len(lines) == 1 and "could not reach the coordinator" in lines[0]
  assert time.time() - began < 60
  assert not (tmp_path / "config.json").exists()


def test_a_process_left_alone_is_one_error_line_in_bounded_time(tmp_path):
  """Process 0 started, process 1 never: one error line, exit 2, no C++ stack trace."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  proc = subprocess.Popen([sys.executable, "-m", "experiments.digits", "--workdir", str(tmp_path),
                           *ARGS, "--coordinator", f"localhost:{free_port()}", "--num-processes",
                           "2", "--process-id", "0", "--distributed-timeout", "5"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err[-2000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "did not all join" in lines[0], err[-2000:]


def test_the_processes_agree_on_stopping_every_few_steps_not_at_each(tmp_path):
  """Each agreement is a cross-process gather that waits for both processes; counted by
  tests/helpers/count_gathers in each process."""
  helper = str(ROOT / "tests" / "helpers" / "count_gathers")
  paths = os.pathsep.join(p for p in (helper, os.environ.get("PYTHONPATH")) if p)
  finish(start_two(tmp_path / "run", env={"PYTHONPATH": paths,
                                          "COUNT_GATHERS_TO": str(tmp_path / "gathers")}))
  lines = run.read_metrics(tmp_path / "run")
  steps = lines[0]["step"]  # per epoch
  gathers = [int(p.read_text()) for p in tmp_path.glob("gathers.*")]
  assert len(gathers) == 2 and gathers[0] == gathers[1]
  assert gathers[0] == len(lines) * (steps // distributed.AGREE_EVERY_STEPS) < len(lines) * steps

"""One run over several processes (hosts) through JAX's multi-controller runtime.

Every process runs the same command; `initialize` joins them into one JAX cluster, after which
`pmap` spans every device of every process. Each process loads its slice of every global batch
(`data.train_batches`), evaluation sums over all processes inside the pmapped step, process 0
alone writes config.json, metrics.jsonl, reports and progress lines, and every process takes part
in each orbax save and restore (orbax writes from process 0, then synchronises).

    --distributed                         TPU pod slices, SLURM, ...: jax finds the cluster itself
    --coordinator HOST:PORT --num-processes N --process-id I     explicit (e.g. local processes)
"""

from __future__ import annotations

import socket
import time

import jax
import numpy as np

from smjax.workdir import RunError


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 60) -> None:
  """Joins the cluster; a coordinator that cannot be reached is one RunError after `timeout_s`.

  `timeout_s` also bounds how long the others wait for a process that died (its missed
  heartbeats): then JAX's runtime ends them, and rerunning every process resumes the run."""
  if coordinator and process_id:  # JAX aborts the process when it cannot connect: look first
    _wait_for(coordinator, timeout_s)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only the CPU client reads it
  try:
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=timeout_s,
                               shutdown_timeout_seconds=timeout_s)
  except Exception as err:  # jax raises RuntimeError / XlaRuntimeError / ValueError here
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    where = f"the coordinator at {coordinator}" if coordinator else "the cluster's coordinator"
    raise RunError(f"could not join {where} within {timeout_s} s ({detail}); start every "
                   "process with the same --coordinator and --num-processes") from None


def _wait_for(coordinator: str, timeout_s: float) -> None:
  """Returns once something listens at HOST:PORT; a RunError after `timeout_s`."""
  host, _, port = coordinator.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1):
        return
    except (OSError, ValueError) as err:
      if time.monotonic() > deadline or isinstance(err, ValueError):
        raise RunError(f"could not reach the coordinator at {coordinator} within {timeout_s} s "
                       f"({err}); start process 0 first, with the same --coordinator") from None
      time.sleep(0.5)


def is_writer() -> bool:
  """Whether this process writes the run directory's files and prints progress (process 0)."""
  return jax.process_index() == 0


def say(text: str) -> None:
  """A progress line on stdout, from process 0 only."""
  if is_writer():
    print(text, flush=True)


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """Whether `flag` is set in any process: a stop request in one stops all at the same step."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))

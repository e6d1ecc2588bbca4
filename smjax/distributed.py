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

import atexit
import os
import socket
import sys
import threading
import time

import jax
import numpy as np

from smjax.workdir import RunError


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 60) -> None:
  """Joins the cluster; a coordinator that cannot be reached, or processes that do not all
  join, end this one with one error line after `timeout_s`.

  `timeout_s` also bounds how long the others wait for a process that died: a watchdog then
  ends them with one error line (exit 2), and rerunning every process resumes the run."""
  if coordinator and process_id:  # JAX aborts the process when it cannot connect: look first
    _wait_for(coordinator, timeout_s)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only the CPU client reads it
  where = f"the coordinator at {coordinator}" if coordinator else "the cluster's coordinator"
  # JAX's runtime aborts the process with a C++ stack trace when the others do not join in
  # time; this timer ends it first, with one line.
  give_up = threading.Timer(timeout_s, _exit_unjoined, args=(where, num_processes, timeout_s))
  give_up.daemon = True
  give_up.start()
  try:
    # JAX's own heartbeat timeout aborts the process too; it is set past the watchdog's,
    # which ends a process whose peer is gone with one error line.
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout_s + JOIN_GRACE_SECONDS,
                               heartbeat_timeout_seconds=HEARTBEAT_FACTOR * timeout_s,
                               shutdown_timeout_seconds=timeout_s)
  except Exception as err:  # jax raises RuntimeError / XlaRuntimeError / ValueError here
    give_up.cancel()
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    raise RunError(f"could not join {where} within {timeout_s} s ({detail}); start every "
                   "process with the same --coordinator and --num-processes") from None
  give_up.cancel()
  watchdog = threading.Thread(target=_watch_peers, args=(timeout_s,), daemon=True,
                              name="smjax-peer-watchdog")
  watchdog.start()
  atexit.register(_say_done)  # runs before JAX's own exit handlers (registered earlier)


HEARTBEAT_FACTOR = 3  # JAX's heartbeat timeout, in multiples of --distributed-timeout
JOIN_GRACE_SECONDS = 15  # JAX's join timeout runs this much past ours


def _exit_unjoined(where: str, num_processes: int | None, timeout_s: float) -> None:
  print(f"error: the {num_processes or 'other'} processes did not all join {where} within "
        f"{timeout_s:g} s; start every process with the same --coordinator and --num-processes",
        file=sys.stderr, flush=True)
  os._exit(2)
ALIVE_KEY = "smjax/alive/"
DONE_KEY = "smjax/done/"
_done = threading.Event()


def _say_done() -> None:
  """At a normal exit: stop watching, and tell the others this process is not lost."""
  _done.set()
  try:
    from jax._src import distributed as jax_distributed
    jax_distributed.global_state.client.key_value_set(f"{DONE_KEY}{jax.process_index()}", "1",
                                                      allow_overwrite=True)
  except Exception:  # the store is gone already: nobody is left to tell
    pass
WATCH_SECONDS = 1.0


def lost_peer_exit(detail: str) -> None:
  """Ends this process when another process of the run is gone: one error line, exit 2,
  without waiting on JAX's runtime (whose shutdown needs every process). Every finished
  epoch is on disk; a save in progress is an orbax temporary, never a damaged checkpoint."""
  print(f"error: another process of this multi-process run is gone ({detail}); every finished "
        "epoch is kept: rerun every process with the same command to resume",
        file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(2)


def _watch_peers(timeout_s: float) -> None:
  """Each process counts up its key in the cluster's key-value store every second and watches
  the others' counts: a count that stands still for `timeout_s`, or a store that cannot be
  reached (process 0, which holds it, is gone), ends this process with `lost_peer_exit`."""
  from jax._src import distributed as jax_distributed
  client = jax_distributed.global_state.client
  me, count = jax.process_index(), jax.process_count()
  last = {}  # peer -> (its count, when it last changed)
  while not _done.is_set():
    try:
      client.key_value_increment(f"{ALIVE_KEY}{me}", 1)
      now = time.monotonic()
      for peer in range(count):
        if peer == me:
          continue
        try:
          seen = client.key_value_try_get(f"{ALIVE_KEY}{peer}")
        except Exception:  # not written yet: the peer is still starting
          seen = None
        if peer not in last or last[peer][0] != seen:
          last[peer] = (seen, now)
        elif now - last[peer][1] > timeout_s and not _done_key(client, peer):
          lost_peer_exit(f"process {peer} gave no sign of life for {timeout_s:g} s")
    except Exception as err:  # the store is gone with process 0
      if _done.is_set():
        return
      lost_peer_exit(f"the coordinator cannot be reached: {first_line(err)}")
    time.sleep(WATCH_SECONDS)


def _done_key(client, peer: int) -> bool:
  try:
    return client.key_value_try_get(f"{DONE_KEY}{peer}") == "1"
  except Exception:
    return False


def lost_peer(err: BaseException) -> bool:
  """Whether an error of a multi-process run is the loss of another process (a collective or
  the cluster's service failing), not a fault of this one."""
  return jax.process_count() > 1 and any(sign in str(err) for sign in LOST_PEER_SIGNS)


LOST_PEER_SIGNS = ("Gloo", "gloo", "Connection reset", "Connection closed", "UNAVAILABLE",
                   "DEADLINE_EXCEEDED", "Socket closed", "heartbeat")


def first_line(err: BaseException) -> str:
  text = str(err).strip()
  return text.splitlines()[0][:160] if text else type(err).__name__


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


AGREE_EVERY_STEPS = 16  # how often the processes of a run agree on a stop request


def agrees_now(steps_done: int, steps_per_call: int = 1) -> bool:
  """Whether a run agrees on a stop request after `steps_done` steps of an epoch: after every
  call in one process (free), else every AGREE_EVERY_STEPS steps (at most once per compiled
  call): each agreement is a cross-process gather that waits for every process to get there,
  which would stall JAX's asynchronous dispatch if it came at every step."""
  if jax.process_count() == 1:
    return True
  every = max(1, AGREE_EVERY_STEPS // steps_per_call) * steps_per_call
  return steps_done % every < steps_per_call


def any_process(flag: bool) -> bool:
  """Whether `flag` is set in any process: a stop request in one stops all at the same step."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))

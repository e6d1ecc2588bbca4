"""Several runs of a study at once, each in a worker process pinned to its own CPU cores.

A small model's step does not scale over cores: LeNet-300-100's 1.5 ms step is barely faster on
two cores than on one, so two runs side by side, one per core, train about 1.7x the epochs per
second of one run on both (docs/results/README.md). `--jobs N` on the command line.

    run_jobs(runs, jobs, train)   trains every run of {workdir: config} with `train` (smjax.run's)
                                  in `jobs` processes, a run only after the runs it starts from
                                  (mask_run, prune_from, rewind_from)

Workers are spawned, not forked (a forked JAX runtime is unsafe), and pinned before JAX starts,
so XLA sizes its thread pool to the worker's share. SIGTERM or Ctrl-C stops every running run at
its next step boundary, after a checkpoint; rerunning the command resumes them all.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from smjax.config import Config
from smjax.stopping import Stopped, stop_requests
from smjax.workdir import RunError

RESEND_SECONDS = 2.0  # a stop request reaches a worker still setting up a run only when it trains
PARENT_POLL_SECONDS = 0.5  # how often a worker checks that its parent is alive
ORPHAN_GRACE_SECONDS = 60.0  # an orphaned worker's time to checkpoint before it exits anyway


def dependencies(runs: dict[Path, Config]) -> dict[Path, set[Path]]:
  """{run: the runs among `runs` it starts from} (a finetune's mask run, a ticket round's
  previous round and the run it rewinds to)."""
  by_path = {Path(p).absolute(): p for p in runs}
  return {p: {by_path[Path(src).absolute()]
              for src in (c.mask_run, c.prune_from, c.rewind_from)
              if src and Path(src).absolute() in by_path}
          for p, c in runs.items()}


def core_shares(jobs: int, cores: list[int] | None = None) -> list[set[int]]:
  """`jobs` disjoint, near-equal shares of the cores this process may run on (shared round-robin
  when there are fewer cores than jobs)."""
  cores = sorted(os.sched_getaffinity(0)) if cores is None else sorted(cores)
  if jobs >= len(cores):
    return [{cores[i % len(cores)]} for i in range(jobs)]
  return [set(cores[i::jobs]) for i in range(jobs)]


def run_jobs(runs: dict[Path, Config], jobs: int, train: Callable, *,
             overwrite: bool = False) -> None:
  """Trains every run in `jobs` pinned worker processes, taking them in the order given, each
  once the runs it starts from are done. `train(config, workdir, overwrite=, dataset=, tag=)`
  is a module-level function (the workers import it).

  Raises the first run's error after stopping the others at a checkpoint, or `Stopped` once
  every running run has checkpointed after a stop request.
  """
  needs = dependencies(runs)
  waiting = list(runs)
  context = multiprocessing.get_context("spawn")
  tasks, results = context.Queue(), context.Queue()
  workers = [context.Process(target=_worker, args=(cores, train, tasks, results), daemon=True)
             for cores in core_shares(min(jobs, len(runs)))]
  running: set[Path] = set()
  failure, stopped = None, False
  with stop_requests() as stop:
    for worker in workers:
      worker.start()
    try:
      while waiting or running:
        if stop and not stopped:  # SIGTERM or Ctrl-C: every running run checkpoints and stops
          stopped = True
          _signal_all(workers, signal.SIGTERM)
        if failure is None and not stopped:
          for workdir in [w for w in waiting if not needs[w] & (set(waiting) | running)]:
            if len(running) == len(workers):
              break
            waiting.remove(workdir)
            running.add(workdir)
            tasks.put((runs[workdir], workdir, overwrite))
        if not running:
          break
        try:
          workdir, (kind, message) = results.get(timeout=RESEND_SECONDS)
        except queue.Empty:
          dead = [w for w in workers if not w.is_alive()]
          if dead:
            raise RunError(f"a worker process died (exit code {dead[0].exitcode}) while training "
                           f"{', '.join(map(str, sorted(running)))}; rerun the same command to resume")
          if stopped or failure is not None:  # one still setting up its run missed the signal
            _signal_all(workers, signal.SIGTERM)
          continue
        running.discard(workdir)
        if kind == "error" and failure is None:
          failure = RunError(message)
        stopped = stopped or kind == "stopped"
        if kind != "done":
          _signal_all(workers, signal.SIGTERM)
    finally:
      if running:  # leaving early (a worker died): the others checkpoint before they go
        _signal_all(workers, signal.SIGTERM)
      for _ in workers:
        tasks.put(None)
      for worker in workers:
        worker.join(timeout=60)
        if worker.is_alive():
          worker.kill()
  if failure is not None:
    raise failure
  if stopped:
    raise Stopped("stopped; every running run checkpointed; rerun the same command to resume")


def _signal_all(workers, signum) -> None:
  for worker in workers:
    if worker.is_alive():
      os.kill(worker.pid, signum)


def _worker(cores: set[int], train: Callable, tasks, results) -> None:
  """One worker: pinned to `cores`, then trains the runs it is sent until it gets None. Signals
  are ignored between runs; `train` installs its own graceful stop while it trains. It ends
  with its parent, however the parent ends (a SIGKILL included): a run in progress checkpoints
  at its next step first."""
  parent = os.getppid()
  results.cancel_join_thread()  # exiting never waits on a reader that is gone
  threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()
  os.sched_setaffinity(0, cores)
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.SIG_IGN)
  from smjax import runtime
  runtime.configure()
  from smjax import data
  dataset = None  # the runs of one study share it
  for config, workdir, overwrite in _tasks(tasks, parent):
    try:
      if dataset is None:
        dataset = data.load(config.dataset, data_dir=config.data_dir, val_size=config.val_size)
      train(config, workdir, overwrite=overwrite, dataset=dataset, tag=_tag(workdir))
      outcome = ("done", "")
    except Stopped as stopped:
      outcome = ("stopped", str(stopped))
    except Exception as err:  # reported by the parent, which stops the other runs
      if not isinstance(err, (ValueError, RuntimeError)):
        traceback.print_exc()
      outcome = ("error", f"{workdir}: {err}")
    results.put((workdir, outcome))
    sys.stdout.flush()


def _tasks(tasks, parent: int):
  """The tasks the parent sends, until it sends None or is gone."""
  while os.getppid() == parent:
    try:
      task = tasks.get(timeout=PARENT_POLL_SECONDS)
    except queue.Empty:
      continue
    if task is None:
      return
    yield task


def _end_with_parent(parent: int) -> None:
  """Once the parent is gone: SIGTERM to this worker every RESEND_SECONDS (a training run
  checkpoints and stops; `_tasks` then ends), and a hard exit after ORPHAN_GRACE_SECONDS."""
  while os.getppid() == parent:
    time.sleep(PARENT_POLL_SECONDS)
  deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
  while time.monotonic() < deadline:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(RESEND_SECONDS)
  os._exit(1)


def _tag(workdir: Path) -> str:
  """seed3/mask for WORKDIR/seed3/mask: what the interleaved progress lines are prefixed with."""
  return "/".join(Path(workdir).parts[-2:])

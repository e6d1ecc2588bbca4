"""The epoch loop and its side effects: checkpoints, metrics, progress, signals.

    train(config, workdir)       one mode (mask | weight | finetune) in one run directory
    train_all(config, workdir)   mask, weight (same init) and finetune from mask's best
    train_seeds(config, workdir, seeds)   train_all per seed
    train_tickets(config, workdir, seeds) lottery-ticket rounds per seed

Their reports: `smjax.report.write_report(workdir)` (the commands write them after training).

The last three take `jobs`: how many runs train at once, each in its own process on its own
share of the CPU cores (smjax/parallel.py).

Rerunning on an existing run directory resumes from its latest readable checkpoint. SIGTERM or
Ctrl-C checkpoints at the next step boundary and raises `Stopped`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from smjax import (checkpoint, data, distributed, masking, models, provenance, pruning,
                   tickets, train as train_lib, workdir as workdir_lib)
from smjax import config as config_lib
from smjax.config import SECONDARY_REGIMES, Config, all_regimes, best_metric
from smjax.stopping import Stopped, stop_requests  # noqa: F401  (Stopped re-exported)
from smjax.workdir import RunError, read_metrics  # noqa: F401  (re-exported)
from smjax.writer import RunWriter

REGIME_CHOICES = workdir_lib.REGIMES + ("all", "tickets")  # what --regime takes


def validate(config: Config) -> None:
  """Every check of a config, one ValueError line for the first that fails: its fields
  (`config.validate`), then its dataset, masks and model against their registries."""
  config_lib.validate(config)
  data.check_config(config)
  masking.check_config(config)
  models.check_config(config)


# --------------------------------------------------------------------------
# Start: initial state, finetune source, resume.


def finetune_start(config: Config) -> dict:
  """Where a fine-tune starts: the `mask_run`'s best checkpoint (among its first
  `start_epochs` epochs when set): its untouched params, scores, BN stats and evaluation masks,
  after checking that it is a run of the same model and data. A weight run as `mask_run` gives
  all-ones masks (the weight_original control). The controls replace a part: `random_mask_seed`
  the masks by the same per-layer counts at random places, `reinit_seed` the weights by that
  seed's init."""
  mask_run = Path(config.mask_run)
  if not config.mask_run or not workdir_lib.is_run(mask_run):
    raise RunError(f"finetune needs --set mask_run=DIR, a finished mask run; got {config.mask_run!r}")
  source = workdir_lib.read_config(mask_run)
  if source.get("mode") not in ("mask", "weight"):
    raise RunError(f"{mask_run} is a {source.get('mode')!r} run; finetune starts from a mask run "
                   "(or a weight run, for the weight_original control)")
  workdir_lib.check_same_network(mask_run, config)
  best = checkpoint.restore(mask_run, step=_start_step(mask_run, config.start_epochs), which="best")
  masks = best["masks"]
  if config.random_mask_seed >= 0:
    masks = pruning.random_masks(masks, config.random_mask_seed)
  if config.reinit_seed >= 0:
    return {"masks": masks}
  state = best["state"]
  return {"params": state["trainable"]["params"], "scores": state["trainable"]["scores"],
          "batch_stats": state["batch_stats"], "masks": masks}


def _start_step(run_dir: Path, epochs: int) -> int | None:
  """The step of `run_dir`'s best epoch among its first `epochs` (None: its best checkpoint)."""
  if not epochs:
    return None
  lines = [m for m in read_metrics(run_dir) if m["epoch"] <= epochs]
  if len(lines) < epochs:
    raise RunError(f"{run_dir} has finished {len(lines)} of the {epochs} epochs to start from")
  best = workdir_lib.best_line(lines, best_metric(workdir_lib.read_config(run_dir)["protocol"]))
  if best["step"] not in checkpoint.steps(run_dir):
    raise RunError(f"{run_dir} kept no checkpoint of epoch {best['epoch']}, its best among the "
                   f"first {epochs}; it needs keep_every_epochs=1")
  return best["step"]


def initial_state(config: Config, model, dataset: data.Dataset, steps: int) -> train_lib.TrainState:
  """The state before the first step: from `config.seed` (so every mode of one seed starts
  from bit-identical params), or, for finetune, from the mask run's best checkpoint; a ticket
  round (`prune_from`) trains `config.seed`'s init (or `reinit_seed`'s, or the weights it is
  rewound to) under a pruned mask."""
  if config.mode == "finetune" and config.prune_from:
    start = tickets.pruned_start(config)
  else:
    start = finetune_start(config) if config.mode == "finetune" else {}
  seed = config.reinit_seed if config.reinit_seed >= 0 else config.seed
  try:
    state = train_lib.create_state(jax.random.key(seed), model, dataset.input_shape, config,
                                   steps_per_epoch=steps, masks=start.get("masks"))
  except (ZeroDivisionError, TypeError, ValueError) as err:  # flax's shape errors
    shape = "x".join(map(str, dataset.input_shape))
    raise RunError(f"model {config.model!r} does not fit {dataset.name}'s {shape} images "
                   f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); pick another "
                   "model or dataset") from None
  if "params" in start:  # a supermask's fine-tune, a late-rewound ticket: from a checkpoint
    trainable = {"params": start["params"],
                 "scores": start.get("scores", state.trainable["scores"])}
    state = state.replace(trainable=trainable, batch_stats=start["batch_stats"],
                          opt_state=state.tx.init(trainable))
  return state


def _resume(manager, workdir: Path, state) -> tuple:
  """(state, epoch to run, that epoch's per-step metrics so far, seconds so far) from the
  newest readable checkpoint; damaged ones are reported and moved aside."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored, meta = checkpoint.restore_state(manager, step, state)
    except checkpoint.CheckpointError as err:
      if distributed.is_writer():
        moved = checkpoint.quarantine(manager.directory, step)
        print(f"warning: {err}; moved to {moved}, trying the previous one", file=sys.stderr)
      distributed.barrier(f"quarantined {step}")
      manager.reload()
      continue
    if meta.get("partial"):
      _sync_metrics(workdir, meta["epoch"] - 1, None)
      return restored, meta["epoch"], meta["history"], meta["seconds"]
    _sync_metrics(workdir, meta["epoch"], meta["metrics"])
    return restored, meta["epoch"] + 1, [], 0.0
  _sync_metrics(workdir, 0, None)
  return state, 1, [], 0.0


def _sync_metrics(workdir: Path, epoch: int, last_line: dict | None) -> None:
  if distributed.is_writer():
    workdir_lib.sync_metrics(workdir, epoch, last_line)
  distributed.barrier("metrics synced")


# --------------------------------------------------------------------------
# The loop.


def _evaluate(p_eval, pstate, split: data.Split | None, config: Config, key=None) -> dict:
  if split is None:
    return {"loss": None, "accuracy": None, "masked_fraction": None}
  batches = data.eval_batches(split, config.eval_batch_size, num_devices=jax.local_device_count(),
                              process_index=jax.process_index(), process_count=jax.process_count())
  sums = jax.device_get([p_eval(pstate, batch, key) for batch in batches])
  count = sum(float(s["count"][0]) for s in sums)
  return {"loss": sum(float(s["loss"][0]) for s in sums) / count,
          "accuracy": sum(float(s["correct"][0]) for s in sums) / count,
          "masked_fraction": float(sums[0]["masked_fraction"][0])}


# Waiting for the previous call before going on keeps at most two calls in flight: the device
# always has the next step queued, and XLA:CPU's pool is never filled by steps that wait for
# their inputs (with several host devices their collectives then deadlock: seen under load).
MAX_CALLS_IN_FLIGHT = 2


def train_epoch(p_step, pstate, dataset: data.Dataset, config: Config, epoch: int, key,
                done: int, stop: list, progress: bool = True) -> tuple:
  """Runs the epoch's steps from `done` on; returns (pstate, per-step metrics, finished?).

  `p_step` takes `config.steps_per_call` stacked batches per call when that is > 1 (the
  epoch's last call padded to as many; its padded steps change nothing). Stops early,
  unfinished, after a stop request: at the next call in one process, at the next agreement of
  all processes in several (`distributed.agrees_now`). No device-to-host read per step (off a
  TTY's progress bar); at most MAX_CALLS_IN_FLIGHT calls in flight.
  """
  steps = data.steps_per_epoch(dataset.train, config.batch_size)
  batches = data.train_batches(dataset.train, config.batch_size, seed=config.seed, epoch=epoch,
                               num_devices=jax.local_device_count(),
                               process_index=jax.process_index(), process_count=jax.process_count())
  batches = itertools.islice(batches, done, None)
  if config.steps_per_call > 1:
    batches = data.stack_batches(batches, config.steps_per_call)
  tty = progress and sys.stderr.isatty() and distributed.is_writer()
  history = []
  with tqdm(total=steps, initial=done, desc=f"{config.mode} {epoch}/{config.epochs}",
            disable=not tty, leave=False) as bar:
    for batch in batches:
      pstate, metrics = p_step(pstate, batch, key)
      count = int(batch["valid"][0].sum()) if config.steps_per_call > 1 else 1
      history.append((metrics, count))
      if len(history) >= MAX_CALLS_IN_FLIGHT:
        jax.block_until_ready(history[-MAX_CALLS_IN_FLIGHT][0])
      done += count
      bar.update(count)
      if tty and len(history) % 10 == 0:  # a host sync inside the epoch only on a TTY
        bar.set_postfix(loss=f"{float(np.ravel(metrics['loss'][0])[-1]):.3f}",
                        acc=f"{float(np.ravel(metrics['accuracy'][0])[-1]):.3f}")
      # every process stops at the same step; several agree every few steps, not at each one
      if distributed.agrees_now(done, config.steps_per_call) and distributed.any_process(bool(stop)):
        break
  fetched = jax.device_get([m for m, _ in history])  # the epoch's one read from the devices
  history = [[float(loss), float(acc)] for m, (_, count) in zip(fetched, history)
             for loss, acc in list(zip(np.ravel(m["loss"][0]), np.ravel(m["accuracy"][0])))[:count]]
  return pstate, history, done == steps


def _sampled_test_accuracy(p_sampled, pstate, dataset: data.Dataset, config: Config,
                           epoch: int) -> dict:
  """Test accuracy of `config.sampled_mask_evals` masks drawn by the estimator: mean and std."""
  key = jax.random.fold_in(jax.random.key(config.seed), 3)
  accuracies = [_evaluate(p_sampled, pstate, dataset.test, config,
                          jax.random.fold_in(key, epoch * 1000 + i))["accuracy"]
                for i in range(config.sampled_mask_evals)]
  return {"test_accuracy_sampled_mean": float(np.mean(accuracies)),
          "test_accuracy_sampled_std": float(np.std(accuracies))}


def _check_finite(history: list, epoch: int, first_step: int, last_good: int | None) -> None:
  bad = next((i for i, (loss, _) in enumerate(history) if not np.isfinite(loss)), None)
  if bad is not None:
    kept = (f"the last good checkpoint (step {last_good}) is kept" if last_good is not None
            else "no checkpoint had been written")
    raise RunError(f"non-finite training loss at epoch {epoch}, step {first_step + bad + 1}; "
                   f"stopped, {kept}")


def train(config: Config, workdir: str | os.PathLike, *, overwrite: bool = False,
          dataset: data.Dataset | None = None, tag: str | None = None,
          name: str | None = None) -> list[dict]:
  """Trains one mode in `workdir` (resuming if it holds a checkpoint); returns the metrics lines.

  `tag` (e.g. seed3/mask) prefixes the epoch lines of runs trained side by side, and turns the
  progress bar off; `name` (e.g. finetune_random) prefixes them otherwise (default: the mode).
  Holds the workdir's lock (process 0) while it runs: a second writer is refused."""
  validate(config)
  workdir = Path(workdir)
  workdir_lib.check(config, workdir, overwrite)  # refusals before any heavy setup
  with writer_lock(workdir):
    return _train(config, workdir, overwrite, dataset, tag, name or config.mode)


def writer_lock(workdir: Path):
  """The workdir's lock, taken by process 0 of a run (the one that writes)."""
  return workdir_lib.locked(workdir) if distributed.is_writer() else contextlib.nullcontext()


def _train(config: Config, workdir: Path, overwrite: bool, dataset: data.Dataset | None,
           tag: str | None, name: str) -> list[dict]:
  if not overwrite and workdir_lib.finished(config, workdir):
    distributed.say(f"{workdir}: finished ({config.epochs} epochs); nothing to do")
    return read_metrics(workdir)
  data.check_batch_size(config.batch_size, jax.local_device_count(), jax.process_count())
  dataset = dataset or data.load(config.dataset, data_dir=config.data_dir, val_size=config.val_size)
  if config.protocol == "clean" and dataset.val is None:
    raise RunError("protocol 'clean' needs a validation split (val_size > 0)")
  steps = data.steps_per_epoch(dataset.train, config.batch_size)
  if steps < 1:
    raise RunError(f"batch_size {config.batch_size} exceeds the {len(dataset.train)} training examples")
  model = models.from_config(config, dataset.num_classes)
  state = initial_state(config, model, dataset, steps)
  distributed.say(header(config, workdir, dataset, state, tag or name))
  checkpoints = checkpoint.checkpoint_dir(workdir)
  if distributed.is_writer():
    workdir_lib.claim(config, workdir, overwrite)
    changed = provenance.append(workdir, provenance.record(),
                                resumed=workdir_lib.trained(workdir))
    if changed:
      print(changed, file=sys.stderr, flush=True)
    checkpoint.remove_temporaries(checkpoints)  # of saves a kill interrupted (we hold the lock)
    for damaged in checkpoint.damaged_metrics(checkpoints):
      moved = checkpoint.quarantine(checkpoints, damaged)
      print(f"warning: checkpoint {checkpoints / str(damaged)} is unreadable (its saved metrics); "
            f"moved to {moved}", file=sys.stderr)
  distributed.barrier("claimed")
  manager = checkpoint.make_manager(checkpoints, config.best_metric,
                                    keep_every_steps=config.keep_every_epochs * steps)
  state, first_epoch, history, seconds = _resume(manager, workdir, state)

  step = train_lib.make_train_step(model, config, train_lib.AXIS)
  if config.steps_per_call > 1:
    step = train_lib.make_multi_train_step(step)
  p_step = train_lib.pmap_train_step(step)
  p_eval = train_lib.pmap_eval_step(train_lib.make_eval_step(model, config, train_lib.AXIS))
  p_sampled = train_lib.pmap_eval_step(
      train_lib.make_eval_step(model, config, train_lib.AXIS, sampled=True))
  sample = config.mode == "mask" and config.sampled_mask_evals > 0
  # the binary masks a checkpoint records, computed where the state is (no upload of a host copy)
  p_eval_masks = jax.pmap(lambda s: jax.tree.map(lambda m: m != 0,
                                                 train_lib.evaluation_masks(s, config)))
  scale, mean, std = data.input_scaling(config.dataset)
  meta = {"config": config.to_dict(), "layers": models.layer_order(model, dataset.input_shape),
          "input": {"shape": list(dataset.input_shape), "dtype": str(dataset.train.images.dtype),
                    "scale": scale, "mean": list(mean), "std": list(std),
                    "num_classes": dataset.num_classes}}
  step_key = jax.random.fold_in(jax.random.key(config.seed), 2)
  pstate = train_lib.replicate(state)
  writer = RunWriter(workdir, tag=tag or name, metric=config.best_metric,
                     num_classes=dataset.num_classes, tensorboard=config.tensorboard,
                     every_steps=config.tensorboard_every_steps)
  with stop_requests() as stop, contextlib.closing(writer):
    for epoch in range(first_epoch, config.epochs + 1):
      start_time = time.perf_counter() - seconds
      pstate, new, finished = train_epoch(p_step, pstate, dataset, config, epoch, step_key,
                                           len(history), stop, progress=tag is None)
      history, seconds = history + new, 0.0
      writer.steps((epoch - 1) * steps, history)
      state, masks = train_lib.unreplicate(pstate), train_lib.unreplicate(p_eval_masks(pstate))
      _check_finite(history, epoch, (epoch - 1) * steps, manager.latest_step())
      if not finished:
        checkpoint.save(manager, int(state.step), state, masks,
                        {**meta, "epoch": epoch, "partial": True, "history": history,
                         "seconds": time.perf_counter() - start_time})
        raise Stopped(f"stopped at step {int(state.step)} (epoch {epoch}); "
                      "rerun the same command to resume")
      train_seconds = time.perf_counter() - start_time
      val = _evaluate(p_eval, pstate, dataset.val, config)
      test = _evaluate(p_eval, pstate, dataset.test, config)
      line = {
          "epoch": epoch, "step": int(state.step), "mode": config.mode,
          "train_loss": float(np.mean([h[0] for h in history])),
          "train_accuracy": float(np.mean([h[1] for h in history])),
          "val_loss": val["loss"], "val_accuracy": val["accuracy"],
          "test_loss": test["loss"], "test_accuracy": test["accuracy"],
          "masked_fraction": test["masked_fraction"],
          "lr": state.learning_rate(state.opt_state, int(state.step)),
          "seconds": time.perf_counter() - start_time,
          "images_per_second": steps * config.batch_size / train_seconds,
      }
      if sample and (epoch == config.epochs or writer.is_new_best(line)):
        line.update(_sampled_test_accuracy(p_sampled, pstate, dataset, config, epoch))
      partial = [s for s in manager.all_steps() if s < int(state.step)
                 and (epoch - 1) * steps < s]
      checkpoint.save(manager, int(state.step), state, masks,
                      {**meta, "epoch": epoch, "metrics": line})
      for s in partial:  # mid-epoch checkpoints of a graceful stop are superseded
        manager.delete(s)
      writer.epoch(line)
      history = []
      if stop and epoch < config.epochs:
        raise Stopped(f"stopped after epoch {epoch}; rerun the same command to resume")
  manager.close()
  return writer.lines


def header(config: Config, workdir: Path, dataset: data.Dataset, state, tag: str) -> str:
  """The line a run starts with: what trains, on what, where."""
  params = sum(leaf.size for leaf in jax.tree.leaves(state.trainable["params"]))
  sizes = " / ".join(f"{len(split):,} {which}" for which, split in
                     (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)) if split)
  devices = jax.devices()
  return (f"[{tag}] {config.model} ({params:,} params) on {dataset.name} ({sizes}); "
          f"{len(devices)} {devices[0].platform} device{'s' * (len(devices) > 1)}"
          f"{f' in {jax.process_count()} processes' if jax.process_count() > 1 else ''}; "
          f"mode {config.mode}; {workdir}")


# --------------------------------------------------------------------------
# Regimes.


ORIGINAL_FINETUNE = {"optimizer": "adam", "lr": 1e-5}  # the published code's fine-tune
DERIVED_FIELDS = ("optimizer", "lr", "epochs", "mask_run")  # what regime_configs sets besides mode


def regime_configs(config: Config, workdir: Path) -> dict[str, Config]:
  """The single-mode configs of one seed, so one initialization:

    mask, weight          the init's scores / weights trained for `epochs` (weight for
                          epochs + finetune_epochs with `equal_compute`)
    finetune              mask's best mask and init, weights trained (finetune_optimizer /
                          _lr / _epochs)
    finetune_original     the same at the published code's Adam 1e-5 (`original_finetune`)
    finetune_random       the supermask's per-layer counts at random places, same init
    finetune_reinit       the supermask on another seed's init (both: `finetune_controls`)
    weight_original       the weight run's best of its first `epochs` epochs continued at
                          Adam 1e-5 (`original_control`): finetune_original's own control
  """
  finetune = config.replace(mode="finetune", optimizer=config.finetune_optimizer or config.optimizer,
                            lr=config.finetune_lr, epochs=config.finetune_epochs,
                            mask_run=str(workdir / "mask"))
  weight_epochs = config.epochs + (config.finetune_epochs if config.equal_compute else 0)
  keep = 1 if config.original_control else config.keep_every_epochs  # weight_original's start
  return {
      "mask": config.replace(mode="mask"),
      "weight": config.replace(mode="weight", epochs=weight_epochs, keep_every_epochs=keep),
      "finetune": finetune,
      "finetune_original": finetune.replace(**ORIGINAL_FINETUNE),
      "finetune_random": finetune.replace(
          random_mask_seed=config.seed + pruning.RANDOM_MASK_SEED_OFFSET),
      "finetune_reinit": finetune.replace(reinit_seed=config.seed + pruning.REINIT_SEED_OFFSET),
      "weight_original": finetune.replace(**ORIGINAL_FINETUNE, mask_run=str(workdir / "weight"),
                                          start_epochs=config.epochs),
  }


def train_runs(runs: dict[Path, Config], *, jobs: int = 1, overwrite: bool = False,
               study: Path | None = None) -> None:
  """Trains every run of {workdir: config} not yet finished, after validating them all: in
  order in this process, or `jobs` at a time in worker processes (a run after those it starts
  from). The runs share one dataset. With `study`, the time it took goes to its
  wall_clock.jsonl (also when stopped)."""
  for workdir, cfg in runs.items():
    validate(cfg)
    workdir_lib.check(cfg, workdir, overwrite)
  finished = [w for w, c in runs.items() if not overwrite and workdir_lib.finished(c, w)]
  for workdir in finished:
    distributed.say(f"{workdir}: finished ({runs[workdir].epochs} epochs); nothing to do")
  runs = {w: c for w, c in runs.items() if w not in finished}
  cores = len(os.sched_getaffinity(0))
  if jobs > cores:
    print(f"warning: --jobs {jobs} on {cores} CPU cores runs {cores} at a time (more would only "
          "share the cores and run slower)", file=sys.stderr)
    jobs = cores
  if jobs > 1 and len(runs) > 1 and (jax.process_count() > 1 or jax.default_backend() != "cpu"):
    raise RunError(f"--jobs > 1 shares one machine's CPU cores; on {jax.default_backend()} "
                   f"with {jax.process_count()} process(es), run one job")
  start = time.perf_counter()
  try:
    if jobs > 1 and len(runs) > 1:
      from smjax import parallel
      parallel.run_jobs(runs, jobs, train, overwrite=overwrite)
      return
    dataset = None
    for workdir, cfg in runs.items():
      if dataset is None:
        dataset = data.load(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size)
      train(cfg, workdir, overwrite=overwrite, dataset=dataset, name=workdir.name)
  finally:
    if study is not None and runs and distributed.is_writer():
      workdir_lib.append_wall_clock(study, time.perf_counter() - start, jobs, len(runs))


def train_all(config: Config, workdir: str | os.PathLike, *, overwrite: bool = False,
              jobs: int = 1) -> None:
  """mask, weight and finetune-from-mask's-best (and the regimes config turns on) in
  WORKDIR/<regime>/ (`smjax.report.write_report` writes their report). Finished runs are not
  started again."""
  workdir = Path(workdir)
  configs = regime_configs(config, workdir)
  train_runs({workdir / r: configs[r] for r in all_regimes(config)}, jobs=jobs, overwrite=overwrite)


def train_tickets(config: Config, workdir: str | os.PathLike, seeds: list[int], *,
                  overwrite: bool = False, jobs: int = 1) -> None:
  """Every ticket round of every seed in WORKDIR/seed<N>/round<R>[_reinit]/ (see
  `smjax.tickets`). Finished rounds are skipped."""
  workdir = Path(workdir)
  train_runs({workdir / f"seed{seed}" / name: cfg for seed in seeds
              for name, cfg in tickets.round_configs(config.replace(seed=seed),
                                                     workdir / f"seed{seed}").items()},
             jobs=jobs, overwrite=overwrite, study=workdir)


def train_seeds(config: Config, workdir: str | os.PathLike, seeds: list[int], *,
                overwrite: bool = False, jobs: int = 1) -> None:
  """`--regime all` once per seed in WORKDIR/seed<N>/, every seed's decisive arms first (mask,
  weight, finetune, finetune_random: C1-C3), then the `SECONDARY_REGIMES`, so that a study cut
  short has the most seeds where they decide. Rerunning resumes; finished runs are skipped."""
  workdir = Path(workdir)
  configs = {seed: regime_configs(config.replace(seed=seed), workdir / f"seed{seed}")
             for seed in seeds}
  regimes = all_regimes(config)
  decisive = [r for r in regimes if r not in SECONDARY_REGIMES]
  secondary = [r for r in regimes if r in SECONDARY_REGIMES]
  runs = {workdir / f"seed{seed}" / r: configs[seed][r]
          for group in (decisive, secondary) for seed in seeds for r in group}
  if distributed.is_writer():
    workdir_lib.record_seeds(workdir, seeds)
  train_runs(runs, jobs=jobs, overwrite=overwrite, study=workdir)

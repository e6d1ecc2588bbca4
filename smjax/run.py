"""The epoch loop and its side effects: config.json, metrics.jsonl, checkpoints, progress.

    train(config, workdir)       one mode (mask | weight | finetune) in one run directory
    train_all(config, workdir)   mask, weight (same init) and finetune from mask's best, then the report

Rerunning on an existing run directory resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from smjax import checkpoint, data, models, optim, train as train_lib
from smjax.config import Config, validate

REGIMES = ("mask", "weight", "finetune", "all")


class RunError(RuntimeError):
  """A run that must not start (conflicting workdir, missing mask run, ...)."""


# --------------------------------------------------------------------------
# Run directory.


def _write_json_atomic(path: Path, obj: Any) -> None:
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def claim_workdir(config: Config, workdir: Path, overwrite: bool = False) -> None:
  """Writes config.json; refuses a workdir that holds a run of another config."""
  path = workdir / "config.json"
  if path.exists() and not overwrite:
    previous = json.loads(path.read_text())
    diff = sorted(k for k, v in config.to_dict().items() if previous.get(k) != v)
    if diff:
      raise RunError(f"{workdir} holds a run with another config (differs in: {', '.join(diff)}); "
                     "use another --workdir or --overwrite")
    return
  if overwrite:
    import shutil
    for name in ("checkpoints", "metrics.jsonl"):
      target = workdir / name
      shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
  workdir.mkdir(parents=True, exist_ok=True)
  _write_json_atomic(path, config.to_dict())


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sync_metrics(workdir: Path, epoch: int, last_line: dict | None) -> None:
  """Makes metrics.jsonl hold exactly one line per checkpointed epoch 1..epoch."""
  lines = [m for m in read_metrics(workdir) if m["epoch"] <= epoch]
  if last_line is not None and (not lines or lines[-1]["epoch"] < epoch):
    lines.append(last_line)  # killed between the checkpoint and its metrics line
  if lines != read_metrics(workdir):
    tmp = workdir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(m) + "\n" for m in lines))
    os.replace(tmp, workdir / "metrics.jsonl")


def _append_metrics(workdir: Path, line: dict) -> None:
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")


# --------------------------------------------------------------------------
# Finetune start.


def finetune_start(config: Config) -> dict:
  """The mask run's best checkpoint: its untouched params, scores, BN stats and
  evaluation masks, after checking that it is a mask run of the same model and data."""
  mask_run = Path(config.mask_run)
  if not config.mask_run or not (mask_run / "config.json").exists():
    raise RunError(f"finetune needs --set mask_run=DIR, a finished mask run; got {config.mask_run!r}")
  source = json.loads((mask_run / "config.json").read_text())
  if source.get("mode") != "mask":
    raise RunError(f"{mask_run} is a {source.get('mode')!r} run; finetune starts from a mask run")
  for key in ("model", "dataset", "downsampling", "mask_biases"):
    if source.get(key) != getattr(config, key):
      raise RunError(f"{mask_run} has {key}={source.get(key)!r}, this run {getattr(config, key)!r}")
  restored = checkpoint.restore(mask_run, which="best")
  state = restored["state"]
  return {"params": state["trainable"]["params"], "scores": state["trainable"]["scores"],
          "batch_stats": state["batch_stats"], "masks": restored["masks"],
          "epoch": restored["epoch"]}


# --------------------------------------------------------------------------
# The loop.


def _evaluate(p_eval, pstate, split: data.Split | None, config: Config, devices: int) -> dict:
  if split is None:
    return {"loss": None, "accuracy": None, "masked_fraction": None}
  batches = data.eval_batches(split, config.eval_batch_size, num_devices=devices,
                              process_index=jax.process_index(), process_count=jax.process_count())
  sums = [p_eval(pstate, batch) for batch in batches]
  sums = jax.device_get(sums)
  count = sum(float(s["count"][0]) for s in sums)
  assert int(count) == len(split), (count, len(split))
  return {"loss": sum(float(s["loss"][0]) for s in sums) / count,
          "accuracy": sum(float(s["correct"][0]) for s in sums) / count,
          "masked_fraction": float(sums[0]["masked_fraction"][0])}


def initial_state(config: Config, model, dataset: data.Dataset, steps: int) -> train_lib.TrainState:
  """The state before the first step: from `config.seed` (so every mode of one seed starts
  from bit-identical params), or, for finetune, from the mask run's best checkpoint."""
  start = finetune_start(config) if config.mode == "finetune" else {}
  state = train_lib.create_state(jax.random.key(config.seed), model, dataset.input_shape, config,
                                 steps_per_epoch=steps, masks=start.get("masks"))
  if start:
    trainable = {"params": start["params"], "scores": start["scores"]}
    state = state.replace(trainable=trainable, batch_stats=start["batch_stats"],
                          opt_state=state.tx.init(trainable))
  return state


def _resume(manager, workdir: Path, state):
  """(state, first epoch to run) from the latest checkpoint, with metrics.jsonl made to match."""
  epoch = manager.latest_step()
  if epoch is None:
    _sync_metrics(workdir, 0, None)
    return state, 1
  state, meta = checkpoint.restore_state(manager, epoch, state)
  _sync_metrics(workdir, epoch, meta["metrics"])
  return state, epoch + 1


def _train_epoch(p_step, pstate, dataset: data.Dataset, config: Config, epoch: int, key) -> tuple:
  """One pass over the training split; returns (pstate, per-step metrics on the host)."""
  devices = jax.local_device_count()
  steps = data.steps_per_epoch(dataset.train, config.batch_size)
  tty = sys.stderr.isatty()
  history = []
  with tqdm(total=steps, desc=f"{config.mode} {epoch}/{config.epochs}", disable=not tty,
            leave=False) as bar:
    for batch in data.train_batches(dataset.train, config.batch_size, seed=config.seed,
                                    epoch=epoch, num_devices=devices,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count()):
      pstate, metrics = p_step(pstate, batch, key)
      history.append(metrics)
      bar.update()
      if tty and len(history) % 10 == 0:  # the only host sync inside the epoch, and only on a TTY
        bar.set_postfix(loss=f"{float(metrics['loss'][0]):.3f}",
                        acc=f"{float(metrics['accuracy'][0]):.3f}")
  return pstate, jax.device_get(history)


def train(config: Config, workdir: str | os.PathLike, *, overwrite: bool = False,
          dataset: data.Dataset | None = None) -> list[dict]:
  """Trains one mode in `workdir` (resuming if it holds a checkpoint); returns the metrics lines."""
  validate(config)
  devices = jax.local_device_count()
  data.check_batch_size(config.batch_size, devices, jax.process_count())
  dataset = dataset or data.load(config.dataset, data_dir=config.data_dir, val_size=config.val_size)
  if config.protocol == "clean" and dataset.val is None:
    raise RunError("protocol 'clean' needs a validation split (val_size > 0)")
  steps = data.steps_per_epoch(dataset.train, config.batch_size)
  if steps < 1:
    raise RunError(f"batch_size {config.batch_size} exceeds the {len(dataset.train)} training examples")
  model = models.get(config.model, dataset.num_classes, **config.model_kwargs())
  state = initial_state(config, model, dataset, steps)
  workdir = Path(workdir)
  claim_workdir(config, workdir, overwrite)
  manager = checkpoint.make_manager(checkpoint.checkpoint_dir(workdir), config.best_metric)
  state, first_epoch = _resume(manager, workdir, state)

  p_step = train_lib.pmap_train_step(train_lib.make_train_step(model, config, train_lib.AXIS))
  p_eval = train_lib.pmap_eval_step(train_lib.make_eval_step(model, config, train_lib.AXIS))
  eval_masks = jax.jit(lambda s: jax.tree.map(lambda m: m != 0,
                                              train_lib.evaluation_masks(s, config)))
  layers = models.layer_order(model, dataset.input_shape)
  step_key = jax.random.fold_in(jax.random.key(config.seed), 2)
  pstate = train_lib.replicate(state)
  for epoch in range(first_epoch, config.epochs + 1):
    start_time = time.perf_counter()
    pstate, history = _train_epoch(p_step, pstate, dataset, config, epoch, step_key)
    train_seconds = time.perf_counter() - start_time
    val = _evaluate(p_eval, pstate, dataset.val, config, devices)
    test = _evaluate(p_eval, pstate, dataset.test, config, devices)
    state = train_lib.unreplicate(pstate)
    line = {
        "epoch": epoch, "step": int(state.step), "mode": config.mode,
        "train_loss": float(np.mean([m["loss"][0] for m in history])),
        "train_accuracy": float(np.mean([m["accuracy"][0] for m in history])),
        "val_loss": val["loss"], "val_accuracy": val["accuracy"],
        "test_loss": test["loss"], "test_accuracy": test["accuracy"],
        "masked_fraction": test["masked_fraction"],
        "lr": optim.current_lr(state.opt_state, config.score_lr if config.mode == "mask"
                               else config.lr, config.schedule,
                               steps * config.epochs, int(state.step)),
        "seconds": time.perf_counter() - start_time,
        "images_per_second": steps * config.batch_size / train_seconds,
    }
    if not np.isfinite(line["train_loss"]):
      raise RunError(f"non-finite training loss in epoch {epoch} (steps {int(state.step) - steps + 1}"
                     f"..{int(state.step)}); last good checkpoint: epoch {epoch - 1}")
    checkpoint.save(manager, epoch, state, jax.device_get(eval_masks(state)),
                    {"metrics": line, "config": config.to_dict(), "layers": layers})
    _append_metrics(workdir, line)
    print(_format_line(line), flush=True)
  manager.close()
  return read_metrics(workdir)


def _format_line(line: dict) -> str:
  pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
  return (f"[{line['mode']}] epoch {line['epoch']}: train loss {line['train_loss']:.4f} "
          f"acc {pct(line['train_accuracy'])} | val {pct(line['val_accuracy'])} | "
          f"test {pct(line['test_accuracy'])} | masked {pct(line['masked_fraction'])} | "
          f"{line['seconds']:.1f}s, {line['images_per_second']:.0f} img/s")


def regime_configs(config: Config, workdir: Path) -> dict[str, Config]:
  """The three single-mode configs of `--regime all`; one seed, so one initialization."""
  return {
      "mask": config.replace(mode="mask"),
      "weight": config.replace(mode="weight"),
      "finetune": config.replace(mode="finetune", lr=config.finetune_lr,
                                 epochs=config.finetune_epochs,
                                 mask_run=str(workdir / "mask")),
  }


def train_all(config: Config, workdir: str | os.PathLike, *, overwrite: bool = False) -> dict:
  """mask, weight and finetune-from-mask's-best in WORKDIR/{mask,weight,finetune}, then the report."""
  from smjax import report
  workdir = Path(workdir)
  configs = regime_configs(config, workdir)
  for cfg in configs.values():
    validate(cfg)
  dataset = data.load(config.dataset, data_dir=config.data_dir, val_size=config.val_size)
  results = {}
  for regime, cfg in configs.items():
    results[regime] = train(cfg, workdir / regime, overwrite=overwrite, dataset=dataset)
  report.write_report(workdir)
  return results

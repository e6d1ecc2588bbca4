"""Where a study epoch's time goes: its training steps through the run's own loop, against the
same steps as one jitted call each (the suite's measure), the evaluation of the validation and
test splits, and the checkpoint save.

    python -m benchmarks.epoch_cost --set model=conv2 --set dataset=cifar10 --set data_dir=DIR \\
        --set batch_size=64 --set steps_per_call=8 --modes mask weight --out runs/epoch_cost.json

Each part is timed `--repeats` times after a warm-up call (compilation excluded), medians
reported; `epoch_estimate` adds them up for a full epoch. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import jax

from benchmarks.common import machine, write_report
from smjax import checkpoint, data, models, run, runtime, train
from smjax.config import Config, with_overrides


def _median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up: compiles
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(config: Config, dataset: data.Dataset, steps: int, repeats: int) -> dict:
  """Seconds of `steps` training steps (run loop; per-step jit), of one evaluation of val and
  test, and of one checkpoint save, for one mode."""
  model = models.from_config(config, dataset.num_classes)
  steps_per_epoch = data.steps_per_epoch(dataset.train, config.batch_size)
  state = train.create_state(jax.random.key(config.seed), model, dataset.input_shape, config,
                             steps_per_epoch=steps_per_epoch)
  step = train.make_train_step(model, config, train.AXIS)
  multi = train.make_multi_train_step(step) if config.steps_per_call > 1 else step
  p_step = train.pmap_train_step(multi)
  p_eval = train.pmap_eval_step(train.make_eval_step(model, config, train.AXIS))
  key = jax.random.key(0)
  holder = {"pstate": train.replicate(state)}
  # A training split of exactly `steps` batches: the loop's epoch is then those steps.
  subset = data.Split(dataset.train.images[:steps * config.batch_size],
                      dataset.train.labels[:steps * config.batch_size])
  small = data.Dataset(dataset.name, subset, dataset.val, dataset.test, dataset.num_classes)

  def loop():
    holder["pstate"], history, _ = run.train_epoch(p_step, holder["pstate"], small, config, 1,
                                                   key, 0, [], progress=False)
    jax.block_until_ready(holder["pstate"])

  single = train.jit_train_step(train.make_train_step(model, config))
  batches = list(itertools.islice(data.train_batches(subset, config.batch_size, seed=0, epoch=1),
                                  steps))
  jit_state = {"state": state}

  def per_step():
    for batch in batches:
      jit_state["state"], metrics = single(jit_state["state"], batch, key)
    jax.block_until_ready(jit_state["state"])

  def evaluate():
    run._evaluate(p_eval, holder["pstate"], dataset.val, config)
    run._evaluate(p_eval, holder["pstate"], dataset.test, config)

  eval_masks = jax.jit(lambda s: jax.tree.map(lambda m: m != 0, train.evaluation_masks(s, config)))
  with tempfile.TemporaryDirectory() as tmp:
    manager = checkpoint.make_manager(tmp, config.best_metric)
    counter = itertools.count(1)

    def save():
      host = train.unreplicate(holder["pstate"])
      checkpoint.save(manager, next(counter), host, jax.device_get(eval_masks(host)),
                      {"epoch": 1, "metrics": {config.best_metric: 0.5}})

    out = {"loop_seconds_per_step": _median_seconds(loop, repeats) / steps,
           "jit_seconds_per_step": _median_seconds(per_step, repeats) / steps,
           "evaluation_seconds": _median_seconds(evaluate, repeats),
           "checkpoint_seconds": _median_seconds(save, repeats)}
    manager.close()
  out["loop_over_jit"] = out["loop_seconds_per_step"] / out["jit_seconds_per_step"]
  out["epoch_estimate_seconds"] = (steps_per_epoch * out["loop_seconds_per_step"] +
                                   out["evaluation_seconds"] + out["checkpoint_seconds"])
  out["epoch_over_training_steps"] = out["epoch_estimate_seconds"] / (
      steps_per_epoch * out["jit_seconds_per_step"])
  return out


def main(argv=None) -> dict:
  runtime.configure()
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--modes", nargs="+", default=["mask", "weight"])
  parser.add_argument("--steps", type=int, default=64, help="training steps per timed call")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="runs/epoch_cost.json")
  args = parser.parse_args(argv)
  base = with_overrides(Config(), args.set)
  dataset = data.load(base.dataset, data_dir=base.data_dir, val_size=base.val_size)
  report = {"config": base.to_dict(), "steps": args.steps, "repeats": args.repeats,
            "machine": machine(), "modes": {}}
  for mode in args.modes:
    report["modes"][mode] = measure(base.replace(mode=mode), dataset, args.steps, args.repeats)
    print(mode, {k: round(v, 4) for k, v in report["modes"][mode].items()}, flush=True)
  write_report(report, args.out)
  return report


if __name__ == "__main__":
  main()

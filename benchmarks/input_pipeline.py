"""Does the input side slow training down? Batching, augmentation, and an epoch vs. its steps.

    python -m benchmarks.input_pipeline --out runs/benchmark_input.json

Measures loading MNIST and CIFAR-10 from their original files (`--data-dir`, default
$SMJAX_DATA_DIR; skipped without one): the first load, which verifies every file's md5, and the
median of later loads, which reuse the verification. Then, on synthetic uint8 data of MNIST and
CIFAR-10 shapes:
  - host batching (shuffled index gather, device-shaped) in images/s;
  - on-device augmentation (flip + translation + rotation, jitted) in images/s;
  - per model: the wall time of one epoch through `smjax.run.train_epoch` (the loop the runs
    use) against steps x the median time of one step on a fixed batch. Goal: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from benchmarks.common import RUNTIME, machine, write_report
from smjax import augment, data, models, run, runtime, train
from smjax.config import Config, with_overrides

CASES = {"lenet300-100": ("mnist", (28, 28, 1), 12800), "conv2": ("cifar10", (32, 32, 3), 3200)}


def synthetic(shape, n, seed=0) -> data.Dataset:
  rng = np.random.default_rng(seed)
  split = data.Split(rng.integers(0, 256, (n, *shape), np.uint8),
                     rng.integers(0, 10, n).astype(np.int32))
  return data.Dataset("synthetic", split, None, split, 10)


def loading_seconds(data_dir: str, repeats: int = 3) -> dict:
  """Seconds to load each dataset (train, validation and test splits) from its original files:
  the first, verifying load in a fresh verification cache, and the median of `repeats` more."""
  import tempfile
  from unittest import mock
  report = {}
  with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, SMJAX_CACHE_DIR=cache):
    for name in ("mnist", "cifar10"):
      times = []
      for _ in range(repeats + 1):
        start = time.perf_counter()
        dataset = data.load(name, data_dir=data_dir)
        times.append(time.perf_counter() - start)
      report[name] = {"images": len(dataset.train) + len(dataset.val) + len(dataset.test),
                      "first_seconds": times[0], "seconds": statistics.median(times[1:])}
  return report


def batching_rate(dataset: data.Dataset, batch: int) -> float:
  start = time.perf_counter()
  count = sum(b["label"].size for b in data.train_batches(
      dataset.train, batch, seed=0, epoch=1, num_devices=jax.local_device_count()))
  return count / (time.perf_counter() - start)


def augment_rate(shape, batch: int, repeats: int = 20) -> float:
  fn = jax.jit(lambda k, x: augment.augment_batch(k, x, flip=True, max_translate=0.1,
                                                  max_rotate=15.0))
  images = jax.numpy.zeros((batch, *shape), jax.numpy.float32)
  jax.block_until_ready(fn(jax.random.key(0), images))
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.key(i), images))
    times.append(time.perf_counter() - start)
  return batch / statistics.median(times)


def epoch_vs_steps(model_name: str, dataset_name: str, dataset: data.Dataset, batch: int,
                   rounds: int = 3, dtype: str = "float32", overrides=()) -> dict:
  """An epoch through the runs' own loop against steps x the median step time.

  Each of `rounds` rounds times a block of single steps on one fixed batch, then an epoch, so
  that drift of the machine hits both alike; the ratio is the median of the rounds' ratios.
  `ratio_to_mean` divides by steps x the mean step instead: an epoch pays for its slow steps,
  which the median leaves out, so this one is what the loop itself adds. `overrides`:
  `key=value` config strings, as `--set` takes them.
  """
  config = with_overrides(Config(model=model_name, dataset=dataset_name, mode="mask",
                                 batch_size=batch, epochs=rounds + 1, flip=True,
                                 max_translate=0.1, max_rotate=15.0, dtype=dtype), overrides)
  model = models.get(model_name, 10, **models.options(config))
  steps = data.steps_per_epoch(dataset.train, batch)
  state = train.create_state(jax.random.key(0), model, dataset.input_shape, config)
  p_step = train.pmap_train_step(train.make_train_step(model, config, train.AXIS))
  key = jax.random.key(1)
  pstate = train.replicate(state)
  pstate, _, _ = run.train_epoch(p_step, pstate, dataset, config, 1, key, 0, [])  # compile, warm
  fixed = next(data.train_batches(dataset.train, batch, seed=0, epoch=1,
                                  num_devices=jax.local_device_count()))
  medians, means, epochs = [], [], []
  for epoch in range(2, rounds + 2):
    step_times = []
    for _ in range(min(steps, 20)):
      start = time.perf_counter()
      pstate, metrics = p_step(pstate, fixed, key)
      jax.block_until_ready(metrics)
      step_times.append(time.perf_counter() - start)
    medians.append(statistics.median(step_times))
    means.append(statistics.mean(step_times))
    start = time.perf_counter()
    pstate, _, _ = run.train_epoch(p_step, pstate, dataset, config, epoch, key, 0, [])
    epochs.append(time.perf_counter() - start)
  ratios = [e / (steps * m) for e, m in zip(epochs, medians)]
  to_mean = [e / (steps * m) for e, m in zip(epochs, means)]
  return {"steps": steps, "batch": batch, "median_step_ms": [1e3 * m for m in medians],
          "mean_step_ms": [1e3 * m for m in means], "epoch_seconds": epochs, "ratios": ratios,
          "ratio": statistics.median(ratios), "ratios_to_mean": to_mean,
          "ratio_to_mean": statistics.median(to_mean)}


def main(argv=None) -> dict:
  RUNTIME.update(runtime.configure())
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--out", default="runs/benchmark_input.json")
  parser.add_argument("--data-dir", default=os.environ.get("SMJAX_DATA_DIR", ""),
                      help="the original MNIST / CIFAR-10 files, for the loading times")
  parser.add_argument("--only-loading", action="store_true")
  args = parser.parse_args(argv)
  report = {"batch": args.batch, "machine": machine(), "batching": {}, "augmentation": {},
            "epoch": {}}
  if args.data_dir:
    report["loading"] = loading_seconds(args.data_dir)
    print("loading", json.dumps(report["loading"]), flush=True)
  if args.only_loading:
    write_report(report, args.out)
    return report
  for model_name, (dataset_name, shape, n) in CASES.items():
    dataset = synthetic(shape, n)
    report["batching"][dataset_name] = {"images_per_second": batching_rate(dataset, args.batch)}
    report["augmentation"][dataset_name] = {"images_per_second": augment_rate(shape, args.batch)}
    report["epoch"][model_name] = epoch_vs_steps(model_name, dataset_name, dataset, args.batch)
    print(dataset_name, model_name, json.dumps(report["epoch"][model_name]), flush=True)
  print(json.dumps({k: report[k] for k in ("batching", "augmentation")}))
  write_report(report, args.out)
  return report


if __name__ == "__main__":
  main()

"""A conv net's training step with smjax's 2x2 max-pool against flax's `nn.max_pool`.

    python -m benchmarks.pool --out docs/benchmarks/benchmark_pool_conv2_cpu.json

Times the pmapped train step the runs use (the CIFAR-10 study's settings by default: Conv-2,
batch 64, crop + flip, Adam) per mode, with `smjax.models.pooling.max_pool` and with flax's
pool traced in its place, interleaved round-robin; first checks that both give bit-identical
states after `--check-steps` steps from the same state, and records which compiled programs
hold a `reduce-window`. Writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import flax.linen as nn
import jax
import numpy as np

from benchmarks.common import RUNTIME, interleaved, machine, write_report
from benchmarks.suite import synthetic_batch
from smjax import models, runtime, train
from smjax.config import Config, with_overrides

POOLS = {"smjax": None, "flax": nn.max_pool}  # None: the models' own


def step_of(config: Config, pool) -> tuple:
  """(compiled pmapped step, replicated state, device-split batch), with `pool` traced in
  (None: the model's own)."""
  model = models.from_config(config, 10)
  state = train.create_state(jax.random.key(0), model, (32, 32, 3), config, steps_per_epoch=100)
  step = train.pmap_train_step(train.make_train_step(model, config, train.AXIS))
  patches = [mock.patch(f"smjax.models.{m}.max_pool", pool) for m in ("small", "wide_resnet")]
  devices = jax.local_device_count()
  batch = jax.tree.map(lambda x: np.reshape(x, (devices, -1, *x.shape[1:])),
                       synthetic_batch(config.batch_size, (32, 32, 3)))
  with contextlib.ExitStack() as stack:
    for patch in patches if pool is not None else []:
      stack.enter_context(patch)
    step = step.lower(train.replicate(state), batch, jax.random.key(0)).compile()
  return step, train.replicate(state), batch


def main(argv=None) -> dict:
  RUNTIME.update(runtime.configure())
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--modes", nargs="+", default=["weight", "mask"])
  parser.add_argument("--steps", type=int, default=10, help="timed rounds")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--check-steps", type=int, default=5)
  parser.add_argument("--out", default="runs/benchmark_pool.json")
  args = parser.parse_args(argv)
  base = with_overrides(Config(model="conv2", dataset="cifar10", batch_size=64, crop_padding=4,
                               flip=True, optimizer="adam", lr=2e-4), args.set)
  calls, identical, reduce_window = {}, {}, {}
  for mode in args.modes:
    compiled = {name: step_of(base.replace(mode=mode), pool) for name, pool in POOLS.items()}
    finals = {}
    for name, (step, state, batch) in compiled.items():
      for i in range(args.check_steps):
        state, _ = step(state, batch, jax.random.key(i))
      finals[name] = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]
      calls[f"{mode}/{name}"] = timer(step, state, batch)
      reduce_window[f"{mode}/{name}"] = "reduce-window" in step.as_text()
    identical[mode] = all(np.array_equal(a.view(np.uint8), b.view(np.uint8))
                          for a, b in zip(finals["smjax"], finals["flax"]))
  times = interleaved(calls, args.steps, args.warmup)
  results = {name: {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts)}
             for name, ts in times.items()}
  for mode in args.modes:
    results[f"{mode}/smjax"]["to_flax"] = (results[f"{mode}/smjax"]["median_ms"] /
                                           results[f"{mode}/flax"]["median_ms"])
  for name, r in results.items():
    print(f"{base.model} {name:14s} {r['median_ms']:9.1f} ms", flush=True)
  report = {"args": vars(args), "config": base.to_dict(), "machine": machine(),
            "bit_identical": identical, "reduce_window_in_program": reduce_window,
            "results": results}
  write_report(report, args.out)
  return report


def timer(step, state, batch):
  """A zero-argument callable: seconds of one step, the state carried from call to call."""
  holder = {"state": state}

  def call() -> float:
    start = time.perf_counter()
    holder["state"], _ = step(holder["state"], batch, jax.random.key(0))
    jax.block_until_ready(holder["state"])
    return time.perf_counter() - start
  return call


if __name__ == "__main__":
  main()

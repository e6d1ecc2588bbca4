"""Cost of masking: median train-step time of weight mode vs. mask mode with each estimator.

    python -m experiments.benchmark_step                       # WRN-16-4, batch 128, 32x32x3
    python -m experiments.benchmark_step --model conv6 --steps 20 --out runs/bench.json

Writes JSON (default runs/benchmark_step.json): per mode/estimator the median ms per jitted
step after warm-up, images/s, and the ratio mask/weight (goal: <= 1.05), plus the machine.
All figures come from one process, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from smjax import masking, models, train
from smjax.config import Config

MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def machine() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.local_devices()],
          "allocator_env": {k: os.environ.get(k) for k in MALLOC_VARS},
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def make_runner(config: Config, shape: tuple[int, int, int]):
  """A closure that runs one jitted, donated train step on a fixed synthetic batch."""
  model = models.get(config.model, 10, **config.model_kwargs())
  state = train.create_state(jax.random.key(0), model, shape, config)
  step = train.jit_train_step(train.make_train_step(model, config))
  rng = np.random.default_rng(0)
  batch = jax.device_put({"image": rng.integers(0, 256, (config.batch_size, *shape), np.uint8),
                          "label": rng.integers(0, 10, (config.batch_size,), np.int32)})
  key = jax.random.key(1)
  holder = [state]

  def run_once() -> float:
    start = time.perf_counter()
    holder[0], metrics = step(holder[0], batch, key)
    jax.block_until_ready((holder[0], metrics))
    return time.perf_counter() - start

  return run_once


def time_interleaved(runners: dict, steps: int, warmup: int) -> dict[str, list[float]]:
  """Round-robin over the variants, so drift of the machine hits all of them alike."""
  for run_once in runners.values():
    for _ in range(warmup):
      run_once()
  times = {name: [] for name in runners}
  for _ in range(steps):
    for name, run_once in runners.items():
      times[name].append(run_once())
  return times


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="wrn16-4")
  parser.add_argument("--dataset", default="cifar10", help="sets the input shape and normalisation")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--out", default="runs/benchmark_step.json")
  args = parser.parse_args(argv)
  shape = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1), "digits": (8, 8, 1)}[args.dataset]
  base = Config(model=args.model, dataset=args.dataset, batch_size=args.batch, dtype=args.dtype)
  variants = {"weight": base.replace(mode="weight")}
  variants.update({f"mask/{e}": base.replace(mode="mask", estimator=e) for e in masking.ESTIMATORS})
  runners = {name: make_runner(config, shape) for name, config in variants.items()}
  results = {}
  for name, times in time_interleaved(runners, args.steps, args.warmup).items():
    median = statistics.median(times)
    results[name] = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(times),
                     "images_per_second": args.batch / median, "steps": len(times)}
    print(f"{name:16s} {1e3 * median:9.1f} ms/step  {args.batch / median:9.1f} img/s", flush=True)
  weight = results["weight"]["median_ms"]
  for name, r in results.items():
    r["ratio_to_weight"] = r["median_ms"] / weight
  report = {"model": args.model, "batch": args.batch, "input_shape": shape, "dtype": args.dtype,
            "warmup": args.warmup, "results": results, "machine": machine(),
            "max_mask_to_weight_ratio": max(r["ratio_to_weight"] for r in results.values())}
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"max mask/weight ratio {report['max_mask_to_weight_ratio']:.3f} -> {out}")
  return report


if __name__ == "__main__":
  main()

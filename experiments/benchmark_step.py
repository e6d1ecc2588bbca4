"""Cost of masking: median train-step time of weight mode vs. mask mode with each estimator.

    python -m experiments.benchmark_step                       # WRN-16-4, batch 128, 32x32x3
    python -m experiments.benchmark_step --model conv6 --steps 20 --out runs/bench.json

The WRN-16-4 slice of `experiments.benchmark` (one jitted call per step, no scanned path):
per mode/estimator the median ms per step after warm-up, images/s, FLOPs, and the ratio
mask/weight (goal: <= 1.05), timed round-robin in one process. Writes JSON (default
runs/benchmark_step.json).
"""

from __future__ import annotations

import argparse

from experiments import benchmark


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="wrn16-4")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=9)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--out", default="runs/benchmark_step.json")
  args = parser.parse_args(argv)
  return benchmark.main(["--models", args.model, "--batch", str(args.batch), "--steps",
                         str(args.steps), "--warmup", str(args.warmup), "--dtype", args.dtype,
                         "--steps-per-call", "1", "--out", args.out])


if __name__ == "__main__":
  main()

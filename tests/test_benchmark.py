import json

import jax
import numpy as np

from experiments import benchmark


def test_benchmark_suite_writes_the_report(tmp_path):
  out = tmp_path / "bench.json"
  report = benchmark.main(["--models", "lenet300-100", "--estimators", "threshold", "topk",
                           "--batch", "8", "--steps", "2", "--warmup", "1",
                           "--steps-per-call", "2", "--epoch-steps", "2", "--out", str(out)])
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  lenet = report["models"]["lenet300-100"]
  variants = {"weight", "mask/threshold", "mask/topk"}
  assert set(lenet["results"]) == variants | {f"{v}/scan" for v in variants}
  for name, r in lenet["results"].items():
    assert r["median_ms"] > 0 and r["images_per_second"] == 8 / (r["median_ms"] / 1e3)
    assert r["flops_per_step"] > 1e6 and r["compiled_memory_bytes"] > 0
  for v in variants:  # a scanned step does the same work as a single step
    assert lenet["results"][f"{v}/scan"]["flops_per_step"] == lenet["results"][v]["flops_per_step"]
  assert set(lenet["ratios"]["mask_to_weight"]) == {"mask/threshold", "mask/topk"}
  assert set(lenet["ratios"]["per_step_to_scan_images_per_second"]) == variants
  assert lenet["epoch"]["steps"] == 2 and lenet["epoch"]["ratio"] > 0
  machine = report["machine"]
  assert machine["backend"] == "cpu" and "allocator_mallopt" in machine


def test_per_step_and_scanned_variants_follow_the_same_trajectory():
  config = benchmark.Config(model="lenet300-100", dataset="mnist", batch_size=8, mode="mask",
                            estimator="topk")
  per_step = benchmark.Variant(config, (28, 28, 1), burst=3)
  scanned = benchmark.Variant(config, (28, 28, 1), steps_per_call=3)
  per_step.call(), scanned.call()
  assert int(per_step.state.step) == int(scanned.state.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               per_step.state.trainable, scanned.state.trainable)

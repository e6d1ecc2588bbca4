import importlib.util
import json
import re
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common, pool as benchmark_pool, suite as benchmark, topk as benchmark_topk


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
    assert r["compiled_memory_bytes"] > 0
  # Weight step of an MLP: forward and weight-gradient matmuls, input gradients above layer 1,
  # and a few element-wise FLOPs per weight (activations, optimizer).
  dims, batch = [784, 300, 100, 10], 8
  weights = sum(a * b for a, b in zip(dims, dims[1:]))
  matmuls = 2 * batch * (2 * weights + sum(a * b for a, b in zip(dims[1:], dims[2:])))
  assert matmuls <= lenet["results"]["weight"]["flops_per_step"] <= matmuls + 10 * weights
  for name, r in lenet["results"].items():
    assert r["matmul_flops_per_step"] == matmuls, name  # same network, same matmuls
  for v in variants:  # a scanned step does the same work as a single step
    assert lenet["results"][f"{v}/scan"]["flops_per_step"] == lenet["results"][v]["flops_per_step"]
  assert set(lenet["ratios"]["mask_to_weight"]) == {"mask/threshold", "mask/topk"}
  assert set(lenet["ratios"]["per_step_to_scan_images_per_second"]) == variants
  assert lenet["epoch"]["steps"] == 2 and lenet["epoch"]["ratio"] > 0
  assert lenet["epoch"]["ratio_to_mean"] > 0
  machine = report["machine"]
  assert machine["backend"] == "cpu" and "allocator_mallopt" in machine
  assert machine["peak_flops_per_second"] is None  # no datasheet peak for a CPU
  assert all("fraction_of_peak" not in r for r in lenet["results"].values())


def test_config_overrides_and_added_variants(tmp_path):
  report = benchmark.main(["--models", "lenet300-100", "--estimators", "threshold", "--batch", "8",
                           "--steps", "1", "--warmup", "0", "--steps-per-call", "1",
                           "--set", "score_lr=0.1", "--also", "optimizer=adam",
                           "score_optimizer=sgd", "--out", str(tmp_path / "b.json")])
  lenet = report["models"]["lenet300-100"]
  assert lenet["config"]["score_lr"] == 0.1 and lenet["config"]["batch_size"] == 8
  flops = {n: r["flops_per_step"] for n, r in lenet["results"].items()}
  changed = {f"{n}/{g}" for n in ("weight", "mask/threshold")
             for g in ("optimizer=adam", "score_optimizer=sgd")}
  assert set(flops) == {"weight", "mask/threshold"} | changed
  # Adam's update does more element-wise work per weight than SGD with momentum; the weight
  # step has no score optimizer and the mask step no weight optimizer to change (up to a few
  # scalar FLOPs of a step count).
  same = lambda a, b: abs(flops[a] - flops[b]) < 1e-5 * flops[a]
  assert flops["weight/optimizer=adam"] > 1.1 * flops["weight"]
  assert flops["mask/threshold/score_optimizer=sgd"] < flops["mask/threshold"] / 1.1
  assert same("weight", "weight/score_optimizer=sgd")
  assert same("mask/threshold", "mask/threshold/optimizer=adam")
  ratios = lenet["ratios"]
  assert set(ratios["to_unchanged"]) == changed
  for group in ("", "/optimizer=adam", "/score_optimizer=sgd"):
    assert ratios[f"mask_to_weight{group}"]["mask/threshold"] == pytest.approx(
        lenet["results"][f"mask/threshold{group}"]["median_ms"]
        / lenet["results"][f"weight{group}"]["median_ms"])


@pytest.mark.parametrize("override, message", [
    ("estimator=topk", "sets estimator itself"),
    ("optimizer=rmsprop", "unknown optimizer 'rmsprop'"),
    ("no_such_key=1", "unknown config key 'no_such_key'"),
    ("lr=-1", "lr must be > 0")])
@pytest.mark.parametrize("flag", ["--set", "--also"])
def test_bad_config_overrides_exit_with_one_line(flag, override, message, capsys, tmp_path):
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main(["--models", "lenet300-100", flag, override, "--out", str(tmp_path / "b.json")])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert f"error: {flag}" in error and message in error
  assert not (tmp_path / "b.json").exists()


def test_datasheet_peaks_of_known_accelerators():
  assert common.peak_flops("NVIDIA H100 80GB HBM3")["bfloat16"] == 989e12
  assert common.peak_flops("NVIDIA H100 PCIe")["bfloat16"] == 756e12
  assert common.peak_flops("NVIDIA H200")["float32"] == 67e12
  assert common.peak_flops("cpu") is None


def test_per_step_and_scanned_variants_follow_the_same_trajectory():
  config = benchmark.Config(model="lenet300-100", dataset="mnist", batch_size=8, mode="mask",
                            estimator="topk")
  per_step = benchmark.Variant(config, (28, 28, 1), burst=3)
  scanned = benchmark.Variant(config, (28, 28, 1), steps_per_call=3)
  per_step.call(), scanned.call()
  assert int(per_step.state.step) == int(scanned.state.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               per_step.state.trainable, scanned.state.trainable)


def test_convolution_benchmark_times_every_distinct_conv(tmp_path):
  from benchmarks import conv as benchmark_conv
  report = benchmark_conv.main(["--model", "wrn10-1", "--input-shape", "8", "8", "3",
                                "--batch", "2", "--steps", "1", "--out", str(tmp_path / "c.json")])
  layers = report["layers"]
  assert sum(layer["count"] for layer in layers) == 9  # stem + 2 + 3 + 3 convs of WRN-10-1
  same = next(layer for layer in layers if layer["count"] == 2)  # stage 1's two 16 -> 16 convs
  assert same["kernel"] == [3, 3, 16, 16] and same["input"] == [8, 8, 16]
  stem = layers[0]
  assert stem["names"] == ["stem"] and stem["gflop"] == 2 * 2 * 8 * 8 * 16 * 3 * 3 * 3 / 1e9
  for backend in ("jax/xla", "jax/winograd"):
    total = report["network_total_ms"][backend]
    for part in benchmark_conv.PARTS:
      assert all(layer["ms"][backend][part] > 0 for layer in layers)
      assert np.isclose(total[part], sum(l["count"] * l["ms"][backend][part] for l in layers))


def test_interleaved_rounds_rotate_which_variant_runs_first():
  order = []
  calls = {name: (lambda name=name: order.append(name) or 1.0) for name in "abc"}
  times = common.interleaved(calls, steps=3, warmup=1)
  assert times == {name: [1.0] * 3 for name in "abc"}
  assert order[3:] == list("abc" "bca" "cab")  # after one warm-up call each


def test_topk_benchmark_times_both_methods(tmp_path):
  report = benchmark_topk.main(["--model", "lenet300-100", "--steps", "2", "--warmup", "1",
                                "--out", str(tmp_path / "topk.json")])
  assert report["layers"] == 3 and report["weights"] == 784 * 300 + 300 * 100 + 100 * 10
  assert report["chosen_method"] == "search"
  assert set(report["results"]) == {f"{m}/{s}" for m in ("search", "sort")
                                    for s in ("continuous", "tied")}
  assert all(r["median_ms"] > 0 for r in report["results"].values())


def test_pool_benchmark_compares_both_pools_and_finds_them_identical(tmp_path):
  report = benchmark_pool.main(["--set", "batch_size=4", "--steps", "2", "--warmup", "1",
                                "--check-steps", "3", "--out", str(tmp_path / "pool.json")])
  assert report["bit_identical"] == {"weight": True, "mask": True}
  assert report["reduce_window_in_program"] == {"weight/smjax": False, "weight/flax": True,
                                                "mask/smjax": False, "mask/flax": True}
  assert all(r["median_ms"] > 0 for r in report["results"].values())
  assert (tmp_path / "pool.json").exists()


def test_matmul_flops_counts_dots_convolutions_and_their_gradients():
  conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (2, 2), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  w, x = jnp.ones((3, 3, 4, 8)), jnp.ones((2, 8, 8, 4))
  # 4 outputs x 3 taps per spatial dim, less the tap past the edge (SAME pads only the end).
  forward = 2 * 2 * 8 * 4 * (4 * 3 - 1) ** 2  # batch x out x in features x (output, tap) pairs
  count = lambda f, *a: benchmark.matmul_flops(jax.make_jaxpr(f)(*a).jaxpr)
  assert count(conv, w, x) == forward
  loss = lambda w, x: jnp.sum(conv(w, x) ** 2)
  assert count(jax.grad(loss, argnums=(0, 1)), w, x) == 3 * forward  # + weight and input grads
  compiled = jax.jit(conv).lower(w, x).compile().cost_analysis()
  assert forward <= compiled["flops"] <= forward + 2 * x.size  # XLA's count, + element-wise
  a, b = jnp.ones((5, 6, 7)), jnp.ones((5, 7, 3))
  assert count(jnp.matmul, a, b) == 2 * 5 * 6 * 3 * 7
  scanned = lambda a: jax.lax.scan(lambda c, _: (c @ c, None), a, None, length=4)[0]
  assert count(scanned, jnp.ones((6, 6))) == 4 * 2 * 6 ** 3
  branches = lambda p, a: jax.lax.cond(p, lambda a: a @ a @ a, lambda a: a @ a, a)
  assert count(branches, True, jnp.ones((6, 6))) == 2 * 2 * 6 ** 3  # the costlier branch


def test_gpu_script_parses_and_names_existing_modules():
  script = Path(__file__).parents[1] / "benchmarks" / "gpu.sh"
  subprocess.run(["bash", "-n", str(script)], check=True)
  modules = set(re.findall(r"^step \d+ ((?:experiments|benchmarks)\.\w+)", script.read_text(), re.M))
  assert modules == {"benchmarks.suite", "experiments.digits", "benchmarks.topk"}
  assert all(importlib.util.find_spec(m) for m in modules)

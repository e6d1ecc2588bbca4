"""The controls that decide whether a supermask is a good initialization: the random-mask and
reinit starts, the weight run extended to equal epochs, the source's fine-tune against its own
control, the statistics of the report, and a digits study with every arm end to end."""

import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import digits
from smjax import checkpoint, cli, data, masking, models, pruning, run, statistics
from smjax import workdir as workdir_lib
from smjax.reports import study

SETS = ["model=lenet300-100", "batch_size=64", "epochs=2", "finetune_epochs=2", "val_size=100",
        "finetune_controls=random,reinit", "equal_compute=true", "original_finetune=true",
        "original_control=true", "score_init_value=0.05"]  # masks from the first epoch
ARMS = ("mask", "weight", "finetune", "finetune_random", "finetune_reinit", "finetune_original",
        "weight_original")


def args(workdir, *sets, seeds=("0", "1")):
  return ["--workdir", str(workdir), "--seeds", *seeds,
          *[a for s in SETS + list(sets) for a in ("--set", s)]]


@pytest.fixture(scope="module")
def every_arm(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("arms")
  assert cli.main(digits.get_config, "digits", args(workdir)) == 0
  return workdir


def config_of(workdir, seed=0):
  config = cli.build_config(digits.get_config, SETS).replace(seed=seed)
  return run.regime_configs(config, workdir / f"seed{seed}")


def start_of(config):
  dataset = data.load("digits", val_size=100.0)
  model = models.from_config(config, dataset.num_classes)
  return run.initial_state(config, model, dataset, data.steps_per_epoch(dataset.train, 64))


# --------------------------------------------------------------------------
# Statistics against hand-computed values.


def t2_cdf(t):
  """Student's t with 2 degrees of freedom has a closed-form CDF."""
  return 0.5 + t / (2 * np.sqrt(2 + t * t))


def test_equivalence_test_matches_the_closed_form_for_two_degrees_of_freedom():
  diffs = [0.001, 0.002, 0.003]  # mean 0.002, sd 0.001, se 0.001 / sqrt(3)
  se = 0.001 / np.sqrt(3)
  p_low = 1 - t2_cdf((0.002 + 0.005) / se)  # H0: mean <= -0.005
  p_high = t2_cdf((0.002 - 0.005) / se)     # H0: mean >= +0.005
  result = statistics.equivalence_test(diffs, margin=0.005)
  assert result["p"] == pytest.approx(max(p_low, p_high), rel=1e-9)
  assert result["p"] == pytest.approx(0.01755, abs=1e-5) and result["equivalent"]
  wide = statistics.equivalence_test([-0.004, 0.002, 0.008], margin=0.005)  # mean 0.002, sd 0.006
  assert wide["p"] == pytest.approx(t2_cdf((0.002 - 0.005) / (0.006 / np.sqrt(3))), rel=1e-9)
  assert not wide["equivalent"]
  assert statistics.equivalence_test([0.01])["p"] is None


def test_epochs_worth_interpolates_where_the_weight_curve_crosses():
  weight = [0.5, 0.6, 0.7, 0.8, 0.9]
  assert statistics.reaching_epoch(weight, 0.65) == pytest.approx(2.5)
  assert statistics.reaching_epoch(weight, 0.4) == 1.0
  assert statistics.reaching_epoch(weight, 0.95) is None
  # k=1: 0.65 at epoch 2.5 (+1.5); k=2: 0.85 at 4.5 (+2.5); k=3: 0.95 never (censored)
  worth = statistics.epochs_worth([0.65, 0.85, 0.95], weight)
  assert worth["per_epoch"] == pytest.approx([1.5, 2.5])
  assert worth["epochs"] == pytest.approx(2.0) and worth["censored"] == 1
  assert statistics.last_mean([0.1, 0.5, 0.6, 0.7]) == pytest.approx(0.6)


def contrast(values):
  best = statistics.paired_interval(values, [0.0] * len(values))
  best["equivalence"] = statistics.equivalence_test(best["values"])
  return {"best": best}


def test_the_decision_rule_reads_the_intervals():
  up, flat, down = [0.010, 0.012, 0.014], [-0.001, 0.0, 0.001], [-0.014, -0.012, -0.010]
  wide = [0.010, -0.002, 0.012]  # mean above 0, interval holding 0, not within ±0.5 points
  v = study.verdict({"C1": contrast(up), "C2": contrast(up), "C3": contrast(up)})
  assert v["better_initialization"] and not v["head_start_not_worth_its_cost"]
  assert not v["undecided"]
  v = study.verdict({"C1": contrast(up), "C2": contrast(down), "C3": contrast(flat)})
  assert v["better_initialization"] is False and v["head_start_not_worth_its_cost"]
  assert v["no_mask_specific_effect"] and v["weights_better_at_equal_epochs"]
  v = study.verdict({"C1": contrast(wide), "C2": contrast(wide), "C3": contrast(wide)})
  assert v["better_initialization"] is False and v["head_start_not_worth_its_cost"] is False
  assert v["no_mask_specific_effect"] is False and v["undecided"]  # rule 4: every statement fails
  v = study.verdict({"C1": contrast(up)})
  assert v["better_initialization"] is None and v["no_mask_specific_effect"] is None
  assert v["undecided"]


def test_dynamic_rescaling_is_the_layer_size_over_its_kept_count():
  params = {"a": {"kernel": jnp.arange(1.0, 9.0).reshape(2, 4)}, "b": {"bias": jnp.ones(3)}}
  masks = {"a": {"kernel": jnp.array([[1, 0, 0, 1], [0, 0, 1, 0]], jnp.float32)}}
  out = masking.apply_masks(params, masks, rescale=True)
  np.testing.assert_allclose(out["a"]["kernel"], params["a"]["kernel"] * masks["a"]["kernel"] * 8 / 3)
  np.testing.assert_array_equal(out["b"]["bias"], params["b"]["bias"])
  plain = masking.apply_masks(params, masks)
  np.testing.assert_array_equal(plain["a"]["kernel"], params["a"]["kernel"] * masks["a"]["kernel"])
  # The factor follows the mask's count but is a constant in the backward pass.
  grad = jax.grad(lambda m: masking.apply_masks(params, {"a": {"kernel": m}},
                                                rescale=True)["a"]["kernel"].sum())(masks["a"]["kernel"])
  np.testing.assert_allclose(grad, params["a"]["kernel"] * 8 / 3)


# --------------------------------------------------------------------------
# The control starts.


def test_random_control_keeps_the_supermasks_per_layer_counts_on_the_same_init(every_arm):
  configs = config_of(every_arm)
  supermask = checkpoint.restore(every_arm / "seed0" / "mask", which="best")
  state = start_of(configs["finetune_random"])
  for name, mask in masking.flatten_masks(supermask["masks"]).items():
    random = masking.flatten_masks(jax.device_get(state.masks))[name]
    assert random.shape == mask.shape and int((random != 0).sum()) == int((mask != 0).sum())
    assert not np.array_equal(random != 0, mask != 0)
  chex.assert_trees_all_equal(jax.device_get(state.trainable["params"]),
                              supermask["state"]["trainable"]["params"])
  expected = pruning.random_masks(supermask["masks"], pruning.RANDOM_MASK_SEED_OFFSET)
  chex.assert_trees_all_equal(jax.device_get(state.masks), jax.tree.map(np.float32, expected))


def test_reinit_control_puts_the_supermask_on_another_seeds_init(every_arm):
  configs = config_of(every_arm)
  supermask = checkpoint.restore(every_arm / "seed0" / "mask", which="best")
  state = start_of(configs["finetune_reinit"])
  chex.assert_trees_all_equal(jax.device_get(state.masks),
                              jax.tree.map(np.float32, supermask["masks"]))
  other = start_of(configs["weight"].replace(seed=pruning.REINIT_SEED_OFFSET))
  chex.assert_trees_all_equal(state.trainable["params"], other.trainable["params"])
  own = supermask["state"]["trainable"]["params"]
  assert all(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(jax.device_get(state.trainable["params"])), jax.tree.leaves(own), strict=True)
      if a.ndim == 2)


def test_weight_original_continues_the_weight_runs_best_of_its_first_epochs(every_arm):
  weight_dir = every_arm / "seed0" / "weight"
  lines = run.read_metrics(weight_dir)
  assert len(lines) == 4  # equal_compute: epochs + finetune_epochs
  best = max(lines[:2], key=lambda m: (m["val_accuracy"], m["epoch"]))
  source = checkpoint.restore(weight_dir, step=best["step"])
  state = start_of(config_of(every_arm)["weight_original"])
  chex.assert_trees_all_equal(jax.device_get(state.trainable["params"]),
                              source["state"]["trainable"]["params"])
  assert all(np.all(m) for m in jax.tree.leaves(jax.device_get(state.masks)))
  config = json.loads((every_arm / "seed0" / "weight_original" / "config.json").read_text())
  assert (config["optimizer"], config["lr"], config["start_epochs"]) == ("adam", 1e-5, 2)


# --------------------------------------------------------------------------
# Extending a weight run to equal epochs.


def strip_timing(lines):
  return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in lines]


def test_extending_a_weight_run_continues_it_bit_identically(tmp_path):
  base = ["--regime", "weight", "--set", "model=lenet300-100", "--set", "batch_size=64",
          "--set", "val_size=100"]
  short, long = tmp_path / "short", tmp_path / "long"
  assert cli.main(digits.get_config, "digits", base + ["--workdir", str(short), "--set", "epochs=2"]) == 0
  assert cli.main(digits.get_config, "digits", base + ["--workdir", str(short), "--set", "epochs=4"]) == 0
  assert cli.main(digits.get_config, "digits", base + ["--workdir", str(long), "--set", "epochs=4"]) == 0
  assert strip_timing(run.read_metrics(short)) == strip_timing(run.read_metrics(long))
  chex.assert_trees_all_equal(checkpoint.restore(short, which="latest")["state"],
                              checkpoint.restore(long, which="latest")["state"])
  assert json.loads((short / "config.json").read_text())["epochs"] == 4
  # Fewer epochs, or more under a schedule that depends on the total, is another run.
  assert cli.main(digits.get_config, "digits", base + ["--workdir", str(short), "--set", "epochs=3"]) == 2
  assert cli.main(digits.get_config, "digits", base + ["--workdir", str(short), "--set", "epochs=6",
                                                       "--set", "schedule=cosine"]) == 2


def test_a_study_trains_every_seeds_decisive_arms_before_the_secondary_ones(tmp_path, monkeypatch):
  started = []
  monkeypatch.setattr(run, "train_runs", lambda runs, **kw: started.extend(runs))
  config = cli.build_config(digits.get_config, SETS)
  run.train_seeds(config, tmp_path, [0, 1])
  names = ["/".join(p.parts[-2:]) for p in started]
  decisive = ["mask", "weight", "finetune", "finetune_random"]
  assert names == ([f"seed{s}/{r}" for s in (0, 1) for r in decisive] +
                   [f"seed{s}/{r}" for s in (0, 1) for r in run.SECONDARY_REGIMES])


# --------------------------------------------------------------------------
# The study with every arm, and its report.


def test_every_arm_study_writes_every_report_file(every_arm):
  report = every_arm / "report"
  assert {p.name for p in report.iterdir()} == {
      "summary.md", "study.json", "curves.png", "total_epochs.png", "mask_utilization.png"}
  result = json.loads((report / "study.json").read_text())
  for seed in (0, 1):
    assert all(run.read_metrics(every_arm / f"seed{seed}" / arm) for arm in ARMS)
  assert set(result["contrasts"]) == {"C1", "C2", "C3", "C4", "C5"}
  assert all(c["best"]["n"] == 2 and c["last3"]["n"] == 2 for c in result["contrasts"].values())
  for seed in ("0", "1"):  # C2 reads the weight run at all 4 epochs, C1 at the first 2
    weight = run.read_metrics(every_arm / f"seed{seed}" / "weight")
    numbers = result["per_seed"][seed]
    assert numbers["weight"]["best_epoch"] <= 2
    assert numbers[study.WEIGHT_EQUAL_EPOCHS]["best_test_accuracy"] == max(
        weight, key=lambda m: (m["val_accuracy"], m["epoch"]))["test_accuracy"]
    c2 = numbers["finetune"]["best_test_accuracy"] - numbers[study.WEIGHT_EQUAL_EPOCHS]["best_test_accuracy"]
    assert c2 == pytest.approx(result["contrasts"]["C2"]["best"]["values"][int(seed)])
  assert set(result["verdict"]) >= {"better_initialization", "head_start_not_worth_its_cost",
                                    "no_mask_specific_effect"}
  assert set(result["worth"]["per_seed"]) == {"0", "1"}
  text = (report / "summary.md").read_text()
  assert "C3: supermask - random mask" in text and "Verdict of the decision rule" in text
  assert "Incomplete" not in text and result["unfinished"] == [] and result["missing_seeds"] == []


def test_a_half_finished_study_is_reported_as_such(every_arm, tmp_path):
  workdir = tmp_path / "study"
  shutil.copytree(every_arm, workdir, ignore=shutil.ignore_patterns("report"))
  metrics = workdir / "seed1" / "finetune" / "metrics.jsonl"
  metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
  shutil.rmtree(workdir / "seed1" / "finetune_reinit")  # planned, not started
  workdir_lib.record_seeds(workdir, [7])
  study.write_report(workdir)
  result = json.loads((workdir / "report" / "study.json").read_text())
  assert result["unfinished"] == [
      {"seed": 1, "regime": "finetune", "epochs": 1, "planned": 2},
      {"seed": 1, "regime": "finetune_reinit", "epochs": 0, "planned": None}]
  assert result["missing_seeds"] == [7]
  assert result["regimes"]["finetune"]["best_test_accuracy"]["n"] == 1
  assert result["contrasts"]["C3"]["best"]["n"] == 1
  text = (workdir / "report" / "summary.md").read_text()
  assert "seed 1 finetune (1 of 2 epochs)" in text and "seed 7 (no runs yet)" in text
  assert "seed 1 finetune_reinit (not started)" in text
  assert result["contrasts"]["C4"]["best"]["n"] == 1  # seed 0 alone

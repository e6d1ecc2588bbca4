"""Multi-seed studies: aggregation against hand-computed values, and a 2-seed study end to end."""

import json

import chex
import jax
import numpy as np
import pytest

from experiments import digits
from smjax import checkpoint, cli, data, provenance, report
from smjax.reports import study
from smjax.workdir import REGIMES

T_975_2DF = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)


def numbers(best, final=0.5, to_99=3, masked=0.0, sampled=None):
  return {"best_test_accuracy": best, "final_test_accuracy": final, "last3_test_accuracy": final,
          "epochs_to_99": to_99, "masked_fraction": masked, "sampled_test_accuracy": sampled}


def test_aggregation_matches_hand_computed_values():
  per_seed = {
      0: {"weight": numbers(0.90, to_99=4), "finetune": numbers(0.91), "mask": numbers(0.80, masked=0.1)},
      1: {"weight": numbers(0.92, to_99=6), "finetune": numbers(0.95), "mask": numbers(0.83, masked=0.2)},
      2: {"weight": numbers(0.94, to_99=8), "finetune": numbers(0.96), "mask": numbers(0.86, masked=0.3)},
  }
  out = study.aggregate(per_seed)
  weight = out["regimes"]["weight"]
  assert weight["best_test_accuracy"]["mean"] == pytest.approx(0.92)
  assert weight["best_test_accuracy"]["std"] == pytest.approx(0.02)  # sqrt((4 + 0 + 4) / 2) / 100
  assert weight["epochs_to_99"]["mean"] == 6 and weight["epochs_to_99"]["std"] == pytest.approx(2)
  assert out["regimes"]["mask"]["masked_fraction"]["std"] == pytest.approx(0.1)
  assert out["regimes"]["mask"]["sampled_test_accuracy"]["n"] == 0
  diff = out["paired_vs_weight"]["finetune"]  # differences 0.01, 0.03, 0.02
  assert diff["n"] == 3 and diff["mean"] == pytest.approx(0.02) and diff["std"] == pytest.approx(0.01)
  half = T_975_2DF * 0.01 / np.sqrt(3)
  assert (diff["low"], diff["high"]) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
  mask = out["paired_vs_weight"]["mask"]  # -0.10, -0.09, -0.08
  assert mask["mean"] == pytest.approx(-0.09) and mask["high"] < 0
  assert "weight" not in out["paired_vs_weight"] and "mask (sampled)" not in out["paired_vs_weight"]
  for seed, value in zip(per_seed, (0.88, 0.93, 0.93)):  # sampled Bernoulli masks
    per_seed[seed]["mask"]["sampled_test_accuracy"] = value
  bernoulli = study.aggregate(per_seed)
  sampled = bernoulli["paired_vs_weight"]["mask (sampled)"]  # -0.02, +0.01, -0.01
  # the sampled-mask figure (what Zhou et al. report) comes first, the deterministic one labelled
  assert list(bernoulli["paired_vs_weight"])[:2] == ["mask (sampled)", "mask"]
  text = study.summary_markdown({**bernoulli, "per_seed": {}, "layers": [], "command": None,
                                 "epoch_seconds": {}, "jax_version": "x", "machine": "m"})
  assert text.index("| mask (sampled), as Zhou et al. report | 3 | 91.33 ± 2.89") < text.index(
      "| mask (deterministic: p > 0.5) | 3 | 83.00 ± 3.00")
  assert text.index("| mask (sampled) - weight |") < text.index("| mask (deterministic) - weight |")
  assert sampled["n"] == 3 and sampled["mean"] == pytest.approx(-0.02 / 3)
  assert sampled["std"] == pytest.approx(np.sqrt((0.04 ** 2 + 0.05 ** 2 + 0.01 ** 2) / 9 / 2))  # deviations -4/3, 5/3, -1/3 %


def test_one_seed_has_no_spread_and_no_interval():
  out = study.aggregate({3: {"weight": numbers(0.9), "finetune": numbers(0.95)},
                         4: {}})  # seed 4's runs are all unfinished: not counted in n
  assert out["seeds"] == [3]
  assert out["regimes"]["weight"]["best_test_accuracy"]["std"] is None
  assert out["paired_vs_weight"]["finetune"]["low"] is None
  assert "n = 1" in study.summary_markdown({**out, "per_seed": {}, "layers": [], "command": None,
                                            "epoch_seconds": {"weight": 7.0}, "jax_version": "x",
                                            "machine": "m"})


def test_epochs_to_99_is_the_first_epoch_within_1_percent_of_the_runs_best():
  curve = [{"epoch": i + 1, "test_accuracy": a, "val_accuracy": v, "masked_fraction": 0.0}
           for i, (a, v) in enumerate([(0.5, 0.5), (0.93, 0.9), (0.95, 0.9), (0.94, 0.95)])]
  numbers = study.run_numbers(curve, "val_accuracy")
  assert numbers["epochs_to_99"] == 3  # 0.99 * 0.95 = 0.9405 > 0.93
  assert numbers["best_epoch"] == 4 and numbers["best_test_accuracy"] == 0.94
  assert numbers["last3_test_accuracy"] == pytest.approx((0.93 + 0.95 + 0.94) / 3)


def test_layer_utilization_counts_only_finished_mask_runs(tmp_path):
  def seed(masked, epochs):
    curve = [{"epoch": i + 1, "test_accuracy": 0.5, "val_accuracy": 0.5, "masked_fraction": masked}
             for i in range(epochs)]
    run = {"curve": curve, "best_on": "val_accuracy", "finished": epochs == 3, "planned_epochs": 3}
    return {"regimes": {"mask": run}, "layers": [{"name": "dense/kernel", "shape": [4, 2],
                                                 "n_weights": 8, "masked_fraction": masked}]}
  summaries = {0: seed(0.25, 3), 1: seed(0.75, 3), 2: seed(0.01, 1)}  # seed 2: epoch 1 of 3
  paths = {s: tmp_path / f"seed{s}" for s in summaries}
  per_seed, _, layers, unfinished = study.collect(tmp_path, paths, summaries)
  assert layers["dense/kernel"]["masked_fraction"]["mean"] == pytest.approx(0.5)
  assert per_seed[2] == {} and unfinished == [{"seed": 2, "regime": "mask", "epochs": 1,
                                               "planned": 3}]


@pytest.mark.slow
def test_two_seed_study_end_to_end_resumes_and_rebuilds(tmp_path, monkeypatch, capsys):
  sets = ["model=lenet300-100", "epochs=2", "finetune_epochs=1", "batch_size=64", "val_size=100",
          "original_finetune=true"]
  args = ["--workdir", str(tmp_path), "--seeds", "0", "1", *[a for s in sets for a in ("--set", s)]]
  assert cli.main(digits.get_config, "digits", args) == 0
  files = {"summary.md", "study.json", "curves.png", "total_epochs.png", "mask_utilization.png"}
  assert {p.name for p in (tmp_path / "report").iterdir()} == files
  result = json.loads((tmp_path / "report" / "study.json").read_text())
  assert result["seeds"] == [0, 1] and set(result["regimes"]) == set(REGIMES[:4])
  assert result["paired_vs_weight"]["finetune"]["n"] == 2
  assert result["command"].startswith("python -m experiments.digits --workdir")
  assert result["wall_clock"]["commands"] == 1 and result["wall_clock"]["seconds"] > 0
  assert "Wall-clock of the training: " in (tmp_path / "report" / "summary.md").read_text()
  # every run's provenance, as its provenance.json holds it
  runs = {f"seed{s}/{r}" for s in (0, 1) for r in REGIMES[:4]}
  assert set(result["provenance"]) == runs
  for name in runs:
    assert result["provenance"][name] == provenance.read(tmp_path / name) != []
  assert "8 runs started on " in (tmp_path / "report" / "summary.md").read_text()
  for seed in (0, 1):
    config = json.loads((tmp_path / f"seed{seed}" / "mask" / "config.json").read_text())
    assert config["seed"] == seed
    best = checkpoint.restore(tmp_path / f"seed{seed}" / "mask", which="best")["masks"]
    for regime in ("finetune", "finetune_original"):
      frozen = checkpoint.restore(tmp_path / f"seed{seed}" / regime, which="latest")["state"]["masks"]
      chex.assert_trees_all_equal(best, jax.tree.map(lambda m: np.asarray(m) != 0, frozen))
  original = json.loads((tmp_path / "seed0" / "finetune_original" / "config.json").read_text())
  assert (original["optimizer"], original["lr"]) == ("adam", 1e-5)
  # each seed is its own initialization
  init = lambda seed: checkpoint.restore(tmp_path / f"seed{seed}" / "mask")["state"]["trainable"]
  a, b = jax.tree.leaves(init(0)["params"]), jax.tree.leaves(init(1)["params"])
  assert not any(np.array_equal(x, y) for x, y in zip(a, b) if x.ndim == 2)

  monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("a finished seed loaded data"))
  capsys.readouterr()
  assert cli.main(digits.get_config, "digits", args) == 0
  assert capsys.readouterr().out.count("finished (") == 8  # 2 seeds x 4 runs, one line each
  assert len((tmp_path / "wall_clock.jsonl").read_text().splitlines()) == 1  # nothing trained
  (tmp_path / "report" / "study.json").unlink()
  assert report.main([str(tmp_path)]) == 0
  rebuilt = json.loads((tmp_path / "report" / "study.json").read_text())
  assert rebuilt == result
  # the commands that ran the study, each once
  assert cli.main(digits.get_config, "digits", args[:4] + args[5:]) == 0  # --seeds 0
  commands = (tmp_path / "command.txt").read_text().splitlines()
  assert len(commands) == 2 and " --seeds 0 1 " in commands[0] and " --seeds 0 --set " in commands[1]

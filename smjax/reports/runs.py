"""What a `--regime all` directory holds, as numbers: per regime its metrics, best and final
epochs, and the layer table of the best mask. `reports.run_report` draws it;
`reports.study` aggregates it over seeds."""

from __future__ import annotations

from pathlib import Path

from smjax import checkpoint, masking
from smjax.config import best_metric
from smjax.workdir import REGIMES, best_line, read_config, read_metrics

COLORS = {"mask": "tab:blue", "weight": "tab:orange", "finetune": "tab:green",
          "finetune_original": "tab:red", "finetune_random": "tab:purple",
          "finetune_reinit": "tab:gray", "weight_original": "tab:brown"}


def summarize(workdir: Path) -> dict:
  """Per regime: epochs, best epoch and its accuracies, final accuracy; mask layer table."""
  regimes = {}
  for regime in REGIMES:
    lines = read_metrics(workdir / regime)
    if not lines:
      continue
    config = read_config(workdir / regime)
    metric = best_metric(config["protocol"])
    best = best_line(lines, metric)
    regimes[regime] = {"epochs": len(lines), "best_on": metric, "best_epoch": best["epoch"],
                       "best_val_accuracy": best["val_accuracy"],
                       "best_test_accuracy": best["test_accuracy"],
                       "final_test_accuracy": lines[-1]["test_accuracy"],
                       "masked_fraction": best["masked_fraction"], "curve": lines,
                       "planned_epochs": config["epochs"],
                       "start_epochs": config.get("start_epochs", 0),
                       "finished": len(lines) >= config["epochs"],
                       "equal_compute_from": (config["epochs"] - config["finetune_epochs"]
                                              if regime == "weight" and config.get("equal_compute")
                                              else None)}
  layers = []
  if "mask" in regimes:
    best = checkpoint.restore(workdir / "mask", which="best")
    layers = masking.layer_stats(best["masks"], best["meta"].get("layers"))
  return {"regimes": regimes, "layers": layers}

"""Multi-seed studies: one `--regime all` directory per seed, one aggregated report.

    python -m experiments.zhou --seeds 0 1 2 3 4 --workdir WORKDIR     # trains, then reports
    python -m smjax.report WORKDIR                                     # the report again

WORKDIR/seed<N>/ are ordinary `--regime all` directories. WORKDIR/report/ gets summary.md,
study.json, curves.png and mask_utilization.png: per regime the mean ± std over seeds of the
test accuracy at the best epoch (by the protocol's metric), of the final test accuracy and of
the first epoch that reaches 99% of the run's own best test accuracy; per regime the paired
difference to weight-only training, seed by seed, with its 95% t-interval; the mean test curve
with a ±1 std band; the per-layer % masked of the best masks with its spread.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from smjax.summary import COLORS, REGIMES, summarize  # noqa: E402
from smjax.workdir import (read_config, replaced_atomically, wall_clock,  # noqa: E402
                           wall_clock_text, write_json_atomic)

SEED_DIR = re.compile(r"seed(\d+)$")
RUN_NUMBERS = ("best_test_accuracy", "final_test_accuracy", "epochs_to_99", "masked_fraction",
               "sampled_test_accuracy")


def seed_dirs(workdir: Path) -> dict[int, Path]:
  """{seed: WORKDIR/seed<seed>} for every seed directory that holds at least one run."""
  found = {}
  for path in Path(workdir).iterdir():
    match = SEED_DIR.match(path.name)
    if match and path.is_dir() and any((path / r / "metrics.jsonl").exists() for r in REGIMES):
      found[int(match[1])] = path
  return dict(sorted(found.items()))


def epochs_to_99(curve: list[dict]) -> int:
  """The first epoch whose test accuracy reaches 99% of the run's best test accuracy."""
  best = max(m["test_accuracy"] for m in curve)
  return next(m["epoch"] for m in curve if m["test_accuracy"] >= 0.99 * best)


def run_numbers(regime: dict) -> dict:
  """One run's numbers from `summarize`'s entry: accuracies at the best and the last
  epoch, the first epoch reaching 99% of the run's best test accuracy, the sampled-mask mean
  test accuracy at the best epoch (Bernoulli mask runs that record it)."""
  curve = regime["curve"]
  best_line = curve[regime["best_epoch"] - 1]
  return {"best_test_accuracy": regime["best_test_accuracy"],
          "final_test_accuracy": regime["final_test_accuracy"],
          "epochs_to_99": epochs_to_99(curve),
          "masked_fraction": regime["masked_fraction"],
          "sampled_test_accuracy": best_line.get("test_accuracy_sampled_mean")}


def mean_std(values: list[float]) -> dict:
  """Mean and sample standard deviation (ddof = 1; None for one value)."""
  values = [v for v in values if v is not None]
  if not values:
    return {"n": 0, "mean": None, "std": None, "values": []}
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return {"n": len(values), "mean": float(np.mean(values)), "std": std, "values": values}


def paired_interval(a: list[float], b: list[float], confidence: float = 0.95) -> dict:
  """a - b seed by seed: mean, sample std and the two-sided t-interval of the mean,
  mean ± t_{(1 + confidence) / 2, n - 1} · std / sqrt(n) (None for fewer than two pairs)."""
  diffs = [x - y for x, y in zip(a, b, strict=True)]
  summary = mean_std(diffs)
  low = high = None
  if summary["n"] > 1:
    half = stats.t.ppf((1 + confidence) / 2, summary["n"] - 1) * summary["std"] / np.sqrt(summary["n"])
    low, high = summary["mean"] - half, summary["mean"] + half
  return {**summary, "confidence": confidence, "low": low, "high": high}


def aggregate(per_seed: dict[int, dict[str, dict]]) -> dict:
  """{seed: {regime: run_numbers}} -> per regime the mean/std of every number, and per regime
  other than weight its paired difference to weight in test accuracy at the best epoch, over
  the seeds that have both runs."""
  regimes = [r for r in REGIMES if any(r in runs for runs in per_seed.values())]
  out = {"seeds": list(per_seed), "regimes": {}, "paired_vs_weight": {}}
  for regime in regimes:
    runs = [runs[regime] for runs in per_seed.values() if regime in runs]
    out["regimes"][regime] = {key: mean_std([r[key] for r in runs]) for key in RUN_NUMBERS}
    if regime != "weight":
      pairs = [(runs[regime]["best_test_accuracy"], runs["weight"]["best_test_accuracy"])
               for runs in per_seed.values() if regime in runs and "weight" in runs]
      if pairs:
        out["paired_vs_weight"][regime] = paired_interval(*map(list, zip(*pairs)))
  sampled = [(runs["mask"]["sampled_test_accuracy"], runs["weight"]["best_test_accuracy"])
             for runs in per_seed.values() if "weight" in runs
             and runs.get("mask", {}).get("sampled_test_accuracy") is not None]
  if sampled:  # Bernoulli masks: the mean of sampled masks, the figure Zhou et al. report
    out["paired_vs_weight"]["mask (sampled)"] = paired_interval(*map(list, zip(*sampled)))
  return out


def collect(workdir: Path) -> tuple[dict, dict, dict]:
  """(per-seed run numbers, per-seed report summaries, per-layer % masked over seeds)."""
  summaries = {seed: summarize(path) for seed, path in seed_dirs(workdir).items()}
  if not summaries:
    raise FileNotFoundError(f"{workdir} holds no seed<N>/ run directories")
  per_seed = {seed: {r: run_numbers(v) for r, v in s["regimes"].items()}
              for seed, s in summaries.items()}
  layers = {}
  for summary in summaries.values():
    for layer in summary["layers"]:
      entry = layers.setdefault(layer["name"], {"name": layer["name"], "shape": layer["shape"],
                                                "n_weights": layer["n_weights"], "masked": []})
      entry["masked"].append(layer["masked_fraction"])
  layers = {name: {**v, "masked_fraction": mean_std(v.pop("masked"))} for name, v in layers.items()}
  return per_seed, summaries, layers


def write_report(workdir: str | Path) -> Path:
  """Writes WORKDIR/report/{summary.md, study.json, curves.png, mask_utilization.png}."""
  import jax
  workdir = Path(workdir)
  per_seed, summaries, layers = collect(workdir)
  study = aggregate(per_seed)
  seconds = {r: sum(m["seconds"] for s in summaries.values() if r in s["regimes"]
                    for m in s["regimes"][r]["curve"]) for r in study["regimes"]}
  config_path = next(iter(seed_dirs(workdir).values())) / "mask" / "config.json"
  config = read_config(config_path.parent) if config_path.exists() else {}
  study.update(per_seed=per_seed, layers=list(layers.values()), epoch_seconds=seconds,
               config=config, jax_version=jax.__version__, machine=machine())
  command = workdir / "command.txt"
  study["command"] = command.read_text().strip() if command.exists() else None
  study["wall_clock"] = wall_clock(workdir)
  with replaced_atomically(workdir / "report") as out:
    write_json_atomic(out / "study.json", study)
    plot_curves(summaries, out / "curves.png")
    if layers:
      plot_layers(list(layers.values()), out / "mask_utilization.png")
    (out / "summary.md").write_text(summary_markdown(study))
  return workdir / "report" / "summary.md"


def machine() -> str:
  """The machine a report was written on, in one line."""
  return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, Python {platform.python_version()}"


def plot_curves(summaries: dict, path: Path) -> None:
  """Mean test accuracy per epoch of each regime's own run, with a ±1 std band over seeds."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for regime in REGIMES:
    curves = [[m["test_accuracy"] for m in s["regimes"][regime]["curve"]]
              for s in summaries.values() if regime in s["regimes"]]
    if not curves:
      continue
    length = min(map(len, curves))
    values = 100 * np.array([c[:length] for c in curves])
    mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(length)
    epochs = np.arange(1, length + 1)
    ax.plot(epochs, mean, color=COLORS[regime], label=f"{regime} (n={len(values)})")
    ax.fill_between(epochs, mean - std, mean + std, color=COLORS[regime], alpha=0.2)
  ax.set(xlabel="epoch of the regime's own run", ylabel="test accuracy (%)",
         title="Mean over seeds, band ±1 std")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_layers(layers: list[dict], path: Path) -> None:
  """% masked per layer of the best masks: mean over seeds with ±1 std, in layer order and
  against layer size."""
  mean = [100 * layer["masked_fraction"]["mean"] for layer in layers]
  std = [100 * (layer["masked_fraction"]["std"] or 0.0) for layer in layers]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
  ax1.bar(range(len(layers)), mean, yerr=std, color="tab:blue", capsize=3)
  ax1.set_xticks(range(len(layers)), [layer["name"].rsplit("/", 1)[0] for layer in layers],
                 rotation=90, fontsize=7)
  ax1.set(ylabel="% of weights masked", title="Mask utilization per layer (mean ± std over seeds)")
  ax2.errorbar([layer["n_weights"] for layer in layers], mean, yerr=std, fmt="o", color="tab:blue")
  ax2.set_xscale("log")
  ax2.set(xlabel="weights in layer", ylabel="% of weights masked", title="Masked share vs layer size")
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _pm(summary: dict, scale: float = 100.0, digits: int = 2) -> str:
  if summary["mean"] is None:
    return "-"
  std = "" if summary["std"] is None else f" ± {scale * summary['std']:.{digits}f}"
  return f"{scale * summary['mean']:.{digits}f}{std}"


def summary_markdown(study: dict) -> str:
  n = len(study["seeds"])
  out = ["# Study summary", "",
         f"Seeds {', '.join(map(str, study['seeds']))} (n = {n}); mean ± sample std over seeds. "
         "Test accuracy is over the whole test split, at the epoch the protocol picks as best "
         "(validation accuracy under `clean`).", ""]
  if study.get("command"):
    out += ["```", study["command"], "```", ""]
  out += ["| regime | runs | test acc at best (%) | final test acc (%) | epoch reaching 99% of "
          "best | masked (%) | sampled-mask test acc (%) |", "|---|---|---|---|---|---|---|"]
  for regime, r in study["regimes"].items():
    out.append(f"| {regime} | {r['best_test_accuracy']['n']} | {_pm(r['best_test_accuracy'])} | "
               f"{_pm(r['final_test_accuracy'])} | {_pm(r['epochs_to_99'], 1, 1)} | "
               f"{_pm(r['masked_fraction'])} | {_pm(r['sampled_test_accuracy'])} |")
  out += ["", "Paired differences to weight-only training (test accuracy at the best epoch, "
          "percentage points; 95% t-interval over seeds):", "",
          "| regime - weight | n | mean | 95% interval | per seed |", "|---|---|---|---|---|"]
  for regime, d in study["paired_vs_weight"].items():
    interval = "-" if d["low"] is None else f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"
    per_seed = ", ".join(f"{100 * v:+.2f}" for v in d["values"])
    out.append(f"| {regime} - weight | {d['n']} | {100 * d['mean']:+.2f} | {interval} | {per_seed} |")
  if study["layers"]:
    out += ["", "## Per-layer % masked of the best masks", "",
            "| layer | shape | weights | masked (%) |", "|---|---|---|---|"]
    for layer in study["layers"]:
      out.append(f"| {layer['name']} | {'x'.join(map(str, layer['shape']))} | "
                 f"{layer['n_weights']:,} | {_pm(layer['masked_fraction'])} |")
  hours = {r: s / 3600 for r, s in study["epoch_seconds"].items()}
  out += ["", wall_clock_text(study.get("wall_clock")) +
          "Time in epochs (training and evaluation), summed over the runs of all seeds "
          "(runs side by side under --jobs overlap): " +
          ", ".join(f"{r} {h:.2f} h" for r, h in hours.items()) +
          f"; jax {study['jax_version']}; {study['machine']}.", ""]
  return "\n".join(out)

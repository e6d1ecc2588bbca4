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
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from smjax import provenance  # noqa: E402
from smjax.config import all_regimes, from_dict  # noqa: E402
from smjax.reports import masks  # noqa: E402
from smjax.reports.run_report import y_bottom  # noqa: E402
from smjax.reports.runs import COLORS, REGIMES, best_line, summarize  # noqa: E402
from smjax.statistics import (epochs_worth, equivalence_test, last_mean, mean_std,  # noqa: E402
                              paired_interval)
from smjax.workdir import (is_run, planned_seeds, read_config, replaced_atomically,  # noqa: E402
                           seed_dirs, wall_clock, wall_clock_text, write_json_atomic)

RUN_NUMBERS = ("best_test_accuracy", "final_test_accuracy", "last3_test_accuracy", "epochs_to_99",
               "masked_fraction", "sampled_test_accuracy")
WEIGHT_EQUAL_EPOCHS = "weight (equal epochs)"  # the weight run read at epochs + finetune_epochs
# The contrasts that decide whether a supermask is a good initialization (docs/results/
# decision_rule.md): name -> (a, b, what a - b asks).
CONTRASTS = {
    "C1": ("finetune", "weight", "fine-tuned supermask - weights, both after `epochs` (the source's framing)"),
    "C2": ("finetune", WEIGHT_EQUAL_EPOCHS, "fine-tuned supermask - weights at equal total epochs"),
    "C3": ("finetune", "finetune_random", "supermask - random mask of its per-layer counts, same init, both fine-tuned"),
    "C4": ("finetune", "finetune_reinit", "supermask on its init - on another seed's init, both fine-tuned"),
    "C5": ("finetune_original", "weight_original", "the source's fine-tune (Adam 1e-5) - the weights continued at Adam 1e-5"),
}
ENDPOINTS = {"best": "best_test_accuracy", "last3": "last3_test_accuracy"}
SAMPLED_MASK = "mask (sampled)"  # Bernoulli masks: the mean test accuracy of masks drawn from
# the scores at the best epoch, what Zhou et al. report; "mask" is then the deterministic one


def seeds_with_runs(workdir: Path) -> dict[int, Path]:
  """{seed: WORKDIR/seed<seed>} for every seed folder that holds at least one regime's run."""
  return seed_dirs(workdir, lambda path: any((path / r / "metrics.jsonl").exists() for r in REGIMES))


def epochs_to_99(curve: list[dict]) -> int:
  """The first epoch whose test accuracy reaches 99% of the run's best test accuracy."""
  best = max(m["test_accuracy"] for m in curve)
  return next(m["epoch"] for m in curve if m["test_accuracy"] >= 0.99 * best)


def run_numbers(curve: list[dict], metric: str) -> dict:
  """One run's numbers over its metrics lines `curve`: test accuracy at the best epoch by
  `metric` and at the last, the mean of the last 3 epochs, the first epoch reaching 99% of the
  run's best test accuracy, the masked share at the best epoch, the sampled-mask mean test
  accuracy there (Bernoulli mask runs that record it)."""
  best = best_line(curve, metric)
  tests = [m["test_accuracy"] for m in curve]
  return {"best_test_accuracy": best["test_accuracy"], "final_test_accuracy": tests[-1],
          "last3_test_accuracy": last_mean(tests, min(3, len(tests))),
          "epochs_to_99": epochs_to_99(curve), "best_epoch": best["epoch"],
          "masked_fraction": best["masked_fraction"],
          "sampled_test_accuracy": best.get("test_accuracy_sampled_mean")}


def seed_numbers(summary: dict) -> tuple[dict, list[dict]]:
  """({regime: run_numbers} of one seed's finished runs, [its unfinished runs]). A weight run
  trained for more epochs (`equal_compute`) also gives its reading after the other regimes'
  `epochs` as `weight`, and its whole run as WEIGHT_EQUAL_EPOCHS."""
  numbers, unfinished = {}, []
  for regime, entry in summary["regimes"].items():
    curve, metric = entry["curve"], entry["best_on"]
    short = entry.get("equal_compute_from")
    if regime == "weight" and short:
      if len(curve) >= short:
        numbers["weight"] = run_numbers(curve[:short], metric)
      regime = WEIGHT_EQUAL_EPOCHS
    if entry["finished"]:
      numbers[regime] = run_numbers(curve, metric)
    else:
      unfinished.append({"regime": regime, "epochs": len(curve), "planned": entry["planned_epochs"]})
  return numbers, unfinished


def aggregate(per_seed: dict[int, dict[str, dict]]) -> dict:
  """{seed: {regime: run_numbers}} -> per regime the mean/std of every number; per regime other
  than weight its paired difference to weight in test accuracy at the best epoch; the contrasts
  C1-C5 on both endpoints with their t-intervals and equivalence tests; the verdict of the
  decision rule. Pairs are over the seeds that have both runs; `seeds` are those with at least
  one finished run."""
  order = REGIMES[:2] + (WEIGHT_EQUAL_EPOCHS,) + REGIMES[2:]
  regimes = [r for r in order if any(r in runs for runs in per_seed.values())]
  out = {"seeds": [seed for seed, runs in per_seed.items() if runs], "regimes": {},
         "paired_vs_weight": {}, "contrasts": {}}
  sampled = [(runs["mask"]["sampled_test_accuracy"], runs["weight"]["best_test_accuracy"])
             for runs in per_seed.values() if "weight" in runs
             and runs.get("mask", {}).get("sampled_test_accuracy") is not None]
  if sampled:  # Bernoulli masks: the mean of sampled masks, the figure Zhou et al. report, first
    out["paired_vs_weight"][SAMPLED_MASK] = paired_interval(*map(list, zip(*sampled)))
  for regime in regimes:
    runs = [runs[regime] for runs in per_seed.values() if regime in runs]
    out["regimes"][regime] = {key: mean_std([r.get(key) for r in runs]) for key in RUN_NUMBERS}
    if regime != "weight":
      out["paired_vs_weight"][regime] = _paired(per_seed, regime, "weight", "best_test_accuracy")
  out["paired_vs_weight"] = {k: v for k, v in out["paired_vs_weight"].items() if v}
  for name, (a, b, question) in CONTRASTS.items():
    by_endpoint = {e: _paired(per_seed, a, b, key) for e, key in ENDPOINTS.items()}
    if by_endpoint["best"]:
      for result in by_endpoint.values():
        result["equivalence"] = equivalence_test(result["values"])
      out["contrasts"][name] = {"a": a, "b": b, "question": question, **by_endpoint}
  out["verdict"] = verdict(out["contrasts"])
  return out


def _paired(per_seed: dict, a: str, b: str, key: str) -> dict | None:
  pairs = [(runs[a][key], runs[b][key]) for runs in per_seed.values() if a in runs and b in runs]
  return paired_interval(*map(list, zip(*pairs))) if pairs else None


def verdict(contrasts: dict, endpoint: str = "best") -> dict:
  """The decision rule of docs/results/decision_rule.md on one endpoint: each statement with
  whether the data support it (None: the contrasts it needs are missing or have n < 2), and
  `undecided` (rule 4) when none of the rule's three statements holds."""
  def interval(name):
    c = contrasts.get(name, {}).get(endpoint)
    return None if c is None or c["low"] is None else c

  def above(name):
    c = interval(name)
    return None if c is None else bool(c["low"] > 0)

  c1, c2, c3 = above("C1"), above("C2"), above("C3")
  better = None if c2 is None or c3 is None else c2 and c3
  head_start = None if c2 is None or (c1 is None and c3 is None) else bool(c1 or c3) and not c2
  equivalent = None if interval("C3") is None else bool(interval("C3")["equivalence"]["equivalent"])
  return {"endpoint": endpoint, "better_initialization": better,
          "head_start_not_worth_its_cost": head_start,
          "no_mask_specific_effect": equivalent,
          "undecided": not any(s is True for s in (better, head_start, equivalent)),
          "weights_better_at_equal_epochs": None if interval("C2") is None
          else bool(interval("C2")["high"] < 0)}


def worth_epochs(summaries: dict[int, dict]) -> dict:
  """Per seed and on average: how many epochs of weight training the supermask start is worth
  (statistics.epochs_worth of the fine-tune's test curve against the weight run's), beside the
  mask epochs it cost."""
  per_seed = {}
  for seed, summary in summaries.items():
    regimes = summary["regimes"]
    if "finetune" in regimes and "weight" in regimes and regimes["finetune"]["finished"]:
      curve = lambda r: [m["test_accuracy"] for m in regimes[r]["curve"]]
      per_seed[seed] = {**epochs_worth(curve("finetune"), curve("weight")),
                        "mask_epochs": regimes.get("mask", {}).get("best_epoch")}
  return {"per_seed": per_seed,
          "epochs": mean_std([v["epochs"] for v in per_seed.values()]),
          "censored": sum(v["censored"] for v in per_seed.values())}


def planned_regimes(seed_dir: Path) -> tuple[str, ...]:
  """The runs a seed's `--regime all` plans, from its mask run's config (() without one)."""
  mask_run = seed_dir / "mask"
  return all_regimes(from_dict(read_config(mask_run))) if is_run(mask_run) else ()


def collect(workdir: Path, seed_paths: dict[int, Path],
            summaries: dict | None = None) -> tuple[dict, dict, dict, list]:
  """(per-seed numbers of the finished runs, per-seed report summaries (given, or read from each
  of `seed_paths`, `seeds_with_runs(workdir)`), per-layer % masked over the seeds whose mask run
  finished, the unfinished runs)."""
  if summaries is None:
    summaries = {seed: summarize(path) for seed, path in seed_paths.items()}
  if not summaries:
    raise FileNotFoundError(f"{workdir} holds no seed<N>/ run directories")
  per_seed, unfinished = {}, []
  for seed, summary in summaries.items():
    per_seed[seed], runs = seed_numbers(summary)
    unfinished += [{"seed": seed, **run} for run in runs]
    unfinished += [{"seed": seed, "regime": regime, "epochs": 0, "planned": None}
                   for regime in planned_regimes(seed_paths[seed])
                   if regime not in summary["regimes"]]
  layers = {}
  for seed, summary in summaries.items():
    if "mask" not in per_seed[seed]:  # a mask run still training has no best mask yet
      continue
    for layer in summary["layers"]:
      entry = layers.setdefault(layer["name"], {"name": layer["name"], "shape": layer["shape"],
                                                "n_weights": layer["n_weights"], "masked": []})
      entry["masked"].append(layer["masked_fraction"])
  layers = {name: {**v, "masked_fraction": mean_std(v.pop("masked"))} for name, v in layers.items()}
  return per_seed, summaries, layers, unfinished


def write_report(workdir: str | Path, summaries: dict | None = None) -> Path:
  """Writes WORKDIR/report/{summary.md, study.json, curves.png, total_epochs.png,
  mask_utilization.png}, from {seed: `summarize(seed dir)`} if given. Unfinished runs and
  planned seeds without runs are listed, and kept out of every mean and pair."""
  import jax
  workdir = Path(workdir)
  seed_paths = seeds_with_runs(workdir)
  per_seed, summaries, layers, unfinished = collect(workdir, seed_paths, summaries)
  study = aggregate(per_seed)
  seconds = {r: sum(m["seconds"] for s in summaries.values() if r in s["regimes"]
                    for m in s["regimes"][r]["curve"]) for r in REGIMES}
  seconds = {r: v for r, v in seconds.items() if v}
  missing = [seed for seed in planned_seeds(workdir) if seed not in summaries]
  mask_run = next(iter(seed_paths.values()), workdir) / "mask"
  config = read_config(mask_run) if is_run(mask_run) else {}
  study.update(per_seed=per_seed, layers=list(layers.values()), epoch_seconds=seconds,
               config=config, jax_version=jax.__version__, machine=machine(),
               unfinished=unfinished, missing_seeds=missing, worth=worth_epochs(summaries))
  command = workdir / "command.txt"
  study["command"] = command.read_text().strip() if command.exists() else None
  study["wall_clock"] = wall_clock(workdir)
  study["provenance"] = provenance.of_runs(workdir)
  with replaced_atomically(workdir / "report") as out:
    write_json_atomic(out / "study.json", study)
    plot_curves(summaries, out / "curves.png")
    plot_total_epochs(summaries, out / "total_epochs.png")
    if layers:
      plot_layers(list(layers.values()), out / "mask_utilization.png")
    (out / "summary.md").write_text(summary_markdown(study))
  return workdir / "report" / "summary.md"


def machine() -> str:
  """The machine a report was written on, in one line."""
  return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, Python {platform.python_version()}"


def _band(ax, curves: list[list[float]], x_offset: int, color: str, label: str) -> None:
  """Mean of per-seed curves (cut to the shortest) with a ±1 std band, epochs from 1 + offset."""
  length = min(map(len, curves))
  values = 100 * np.array([c[:length] for c in curves])
  mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(length)
  epochs = np.arange(1, length + 1) + x_offset
  ax.plot(epochs, mean, color=color, label=f"{label} (n={len(values)})")
  ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)


def _test_curves(summaries: dict, regime: str) -> list[list[float]]:
  """The finished runs' per-epoch test accuracies (unfinished ones are left out, as from the
  tables)."""
  return [[m["test_accuracy"] for m in s["regimes"][regime]["curve"]]
          for s in summaries.values()
          if regime in s["regimes"] and s["regimes"][regime]["finished"]]


def plot_curves(summaries: dict, path: Path) -> None:
  """Mean test accuracy per epoch of each regime's own run, with a ±1 std band over seeds."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  sampled = any(m.get("test_accuracy_sampled_mean") is not None for s in summaries.values()
                for m in s["regimes"].get("mask", {}).get("curve", []))
  bests = []
  for regime in REGIMES:
    if curves := _test_curves(summaries, regime):
      label = "mask (deterministic; sampled masks: see the table)" if sampled and regime == "mask" \
          else regime
      _band(ax, curves, 0, COLORS[regime], label)
      bests.append(100 * min(max(c) for c in curves))
  if bests:  # one-point differences near the top show
    ax.set_ylim(bottom=y_bottom(bests))
  ax.set(xlabel="epoch of the regime's own run (a fine-tune's epoch 1 follows the mask run's "
         "best epoch)", ylabel="test accuracy (%)", title="Mean over seeds, band ±1 std")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_total_epochs(summaries: dict, path: Path) -> None:
  """Test accuracy against the total epochs of training behind it: a fine-tune's epoch k is
  drawn at mask epochs + k (weight_original's at `epochs` + k), so curves compare at equal
  compute. Mean over seeds, ±1 std band; y from the weight run's first epoch up."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for regime in REGIMES:
    curves = _test_curves(summaries, regime)
    if not curves or regime == "mask":
      continue
    offset = 0
    if regime.startswith("finetune") or regime == "weight_original":
      source = next(s["regimes"].get("mask") for s in summaries.values())
      offset = source["planned_epochs"] if source else 0
    _band(ax, curves, offset, COLORS[regime], regime + (f" (from epoch {offset})" if offset else ""))
  weight = _test_curves(summaries, "weight")
  if weight:
    low = 100 * min(c[0] for c in weight)
    ax.set_ylim(bottom=low - 1)
  ax.set(xlabel="total training epochs (mask epochs + fine-tune epochs for the fine-tunes)",
         ylabel="test accuracy (%)", title="At equal total epochs: mean over seeds, band ±1 std")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  else:  # a study whose first runs are still training
    ax.text(0.5, 0.5, "no finished run yet", transform=ax.transAxes, ha="center")
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


def mean_std_text(summary: dict, scale: float = 100.0, digits: int = 2) -> str:
  """'91.33 ± 2.89' of a `statistics.mean_std` summary (scaled), '-' without a mean."""
  if summary["mean"] is None:
    return "-"
  std = "" if summary["std"] is None else f" ± {scale * summary['std']:.{digits}f}"
  return f"{scale * summary['mean']:.{digits}f}{std}"


def _interval(d: dict) -> str:
  return "-" if d["low"] is None else f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"


def contrasts_markdown(study: dict) -> list[str]:
  """The contrasts C1-C5, the decision rule's verdict and the epochs a supermask start is worth."""
  contrasts = study.get("contrasts") or {}
  if not contrasts:
    return []
  margin = 100 * next(iter(contrasts.values()))["best"]["equivalence"]["margin"]
  out = ["", "## The contrasts that decide (docs/results/decision_rule.md)", "",
         "Paired over seeds, percentage points, 95% t-interval; equivalence: two one-sided "
         f"t-tests against ±{margin:g} points (p < 0.05: equivalent).", "",
         "| contrast | n | best epoch: mean | 95% interval | TOST p | last 3 epochs: mean | "
         "95% interval | per seed (best epoch) |", "|---|---|---|---|---|---|---|---|"]
  for name, c in contrasts.items():
    best, last = c["best"], c["last3"]
    p = best["equivalence"]["p"]
    out.append(f"| {name}: {c['question']} | {best['n']} | {100 * best['mean']:+.2f} | "
               f"{_interval(best)} | {'-' if p is None else f'{p:.3f}'} | "
               f"{100 * last['mean']:+.2f} | {_interval(last)} | "
               + ", ".join(f"{100 * v:+.2f}" for v in best["values"]) + " |")
  v = study["verdict"]
  says = lambda x: {True: "yes", False: "no", None: "not decidable (contrast missing or n < 2)"}[x]
  out += ["", "Verdict of the decision rule (primary endpoint: test accuracy at the best epoch):", "",
          f"- a better initialization (C2 > 0 and C3 > 0, intervals excluding 0): "
          f"**{says(v['better_initialization'])}**",
          f"- a head start not worth its cost (C1 or C3 > 0, C2 not > 0): "
          f"**{says(v['head_start_not_worth_its_cost'])}**",
          f"- no mask-specific effect (C3 equivalent to 0 within ±{margin:g} points): "
          f"**{says(v['no_mask_specific_effect'])}**",
          f"- none of these three, so undecided at this n (rule 4): **{says(v['undecided'])}**",
          f"- weights better at equal total epochs (C2's interval below 0): "
          f"**{says(v['weights_better_at_equal_epochs'])}**"]
  worth = study.get("worth") or {}
  if worth.get("per_seed"):
    e = worth["epochs"]
    fmt = lambda x: "-" if x is None else f"{x:.1f}"
    seeds = ", ".join(f"seed {seed}: {fmt(w['epochs'])} (mask's best epoch {w['mask_epochs']})"
                      for seed, w in worth["per_seed"].items())
    out += ["", f"A supermask start is worth **{mean_std_text(e, 1, 1)} epochs** of weight "
            "training (per fine-tune epoch k, the epoch at which the weight run first reaches "
            "the fine-tune's test accuracy, minus k; averaged over k, then seeds; linear interpolation between "
            f"epochs). {seeds}." + (f" {worth['censored']} fine-tune epochs were above every "
            "epoch of the weight run and are left out (so this is a lower bound)."
            if worth["censored"] else "")]
  return out


def summary_markdown(study: dict) -> str:
  n = len(study["seeds"])
  out = ["# Study summary", "",
         f"Seeds {', '.join(map(str, study['seeds']))} (n = {n} with a finished run; each row and "
         "pair counts the seeds whose runs of it finished); mean ± sample std over seeds. "
         "Test accuracy is over the whole test split, at the epoch the protocol picks as best "
         "(validation accuracy under `clean`).", ""]
  if study.get("command"):
    out += ["```", study["command"], "```", ""]
  if study.get("unfinished") or study.get("missing_seeds"):
    out += ["**Incomplete study.** Kept out of every mean and pair: " + "; ".join(
        [f"seed {u['seed']} {u['regime']} " + (f"({u['epochs']} of {u['planned']} epochs)"
                                                  if u["planned"] else "(not started)")
         for u in study.get("unfinished", [])] +
        [f"seed {seed} (no runs yet)" for seed in study.get("missing_seeds", [])]) + ".", ""]
  out += ["| regime | runs | test acc at best (%) | final test acc (%) | mean of last 3 epochs (%) "
          "| epoch reaching 99% of best | masked (%) | sampled-mask test acc (%) |",
          "|---|---|---|---|---|---|---|---|"]
  for regime, r in study["regimes"].items():
    if regime == "mask" and r["sampled_test_accuracy"]["mean"] is not None:
      out.append(f"| {SAMPLED_MASK}, as Zhou et al. report | {r['sampled_test_accuracy']['n']} | "
                 f"{mean_std_text(r['sampled_test_accuracy'])} | - | - | - | "
                 f"{mean_std_text(r['masked_fraction'])} | (this row) |")
      regime = "mask (deterministic: p > 0.5)"
    cells = [mean_std_text(r[key]) for key in ("best_test_accuracy", "final_test_accuracy",
                                               "last3_test_accuracy")]
    cells += [mean_std_text(r["epochs_to_99"], 1, 1), mean_std_text(r["masked_fraction"]),
              mean_std_text(r["sampled_test_accuracy"])]
    out.append(f"| {regime} | {r['best_test_accuracy']['n']} | " + " | ".join(cells) + " |")
  out += ["", "Paired differences to weight-only training (test accuracy at the best epoch, "
          "percentage points; 95% t-interval over seeds):", "",
          "| regime - weight | n | mean | 95% interval | per seed |", "|---|---|---|---|---|"]
  sampled = SAMPLED_MASK in study["paired_vs_weight"]
  for regime, d in study["paired_vs_weight"].items():
    regime = "mask (deterministic)" if sampled and regime == "mask" else regime
    interval = _interval(d)
    per_seed = ", ".join(f"{100 * v:+.2f}" for v in d["values"])
    out.append(f"| {regime} - weight | {d['n']} | {100 * d['mean']:+.2f} | {interval} | {per_seed} |")
  out += contrasts_markdown(study)
  if study["layers"]:
    out += ["", "## Per-layer % masked of the best masks", "",
            *masks.layer_table(study["layers"], mean_std_text, "masked (%)")]
  hours = {r: s / 3600 for r, s in study["epoch_seconds"].items()}
  out += ["", wall_clock_text(study.get("wall_clock")) +
          "Time in epochs (training and evaluation), summed over the runs of all seeds "
          "(runs side by side under --jobs overlap): " +
          ", ".join(f"{r} {h:.2f} h" for r, h in hours.items()) +
          f"; jax {study['jax_version']}; {study['machine']}.", "",
          provenance.summary_text(study.get("provenance", {})), ""]
  return "\n".join(out)

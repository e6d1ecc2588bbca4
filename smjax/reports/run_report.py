"""The report of a `--regime all` directory: accuracy curves, mask utilization, summary.

Writes WORKDIR/report/{curves.png, mask_utilization.png, summary.md}.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from smjax import provenance  # noqa: E402
from smjax.reports import masks  # noqa: E402
from smjax.reports.runs import COLORS, REGIMES, best_line, summarize  # noqa: E402
from smjax.workdir import replaced_atomically  # noqa: E402


def _start(regimes: dict, regime: str) -> tuple[str, int]:
  """(the run a regime continues from, the epoch of it that it starts at; 0: from scratch).
  Fine-tunes start at the mask run's best epoch; weight_original at the weight run's best among
  its first `start_epochs`."""
  source = "weight" if regime == "weight_original" else "mask"
  if not (regime.startswith("finetune") or regime == "weight_original") or source not in regimes:
    return source, 0
  entry = regimes[source]
  if regime == "weight_original":
    first = entry["curve"][:regimes[regime]["start_epochs"] or None]
    return source, best_line(first, entry["best_on"])["epoch"]
  return source, entry["best_epoch"]


def plot_curves(summary: dict, path: Path) -> None:
  """Test accuracy per epoch; finetune continues from the mask run's best epoch."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  regimes = summary["regimes"]
  for regime in REGIMES:
    if regime not in regimes:
      continue
    color = COLORS[regime]
    curve = regimes[regime]["curve"]
    source, offset = _start(regimes, regime)
    epochs = [offset + m["epoch"] for m in curve]
    accuracy = [100 * m["test_accuracy"] for m in curve]
    if offset:  # start the continuation at the checkpoint it starts from
      start = regimes[source]["curve"][offset - 1]
      epochs, accuracy = [offset] + epochs, [100 * start["test_accuracy"]] + accuracy
    best_on = regimes[regime]["best_on"].removesuffix("_accuracy")
    ax.plot(epochs, accuracy, marker="o", ms=3, color=color,
            label=f"{regime} ({100 * regimes[regime]['best_test_accuracy']:.2f}% at its best "
                  f"{best_on} epoch)")
  ax.set_ylim(bottom=y_bottom([100 * max(m["test_accuracy"] for m in r["curve"])
                               for r in regimes.values()]), top=100.5)
  ax.set(xlabel="epoch (a fine-tune continues from the epoch of the checkpoint it starts from)",
         ylabel="test accuracy (%)", title="Supermask, weights, and fine-tuned supermask")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def y_bottom(bests: list[float], span: float = 5.0) -> float:
  """Where a curves figure's y axis starts (%): `span` points below the lowest of the curves'
  best values, so that one-point differences near the top show (early epochs may fall below)."""
  return max(0.0, min(bests) - span)


def plot_mask_utilization(layers: list[dict], path: Path) -> None:
  """% of weights masked per layer, in layer order and against layer size (log axis)."""
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
  masked = [100 * layer["masked_fraction"] for layer in layers]
  ax1.bar(range(len(layers)), masked, color="tab:blue")
  ax1.set_xticks(range(len(layers)), [layer["name"].rsplit("/", 1)[0] for layer in layers],
                 rotation=90, fontsize=7)
  ax1.set(ylabel="% of weights masked", title="Mask utilization per layer", ylim=(0, 100))
  ax2.scatter([layer["n_weights"] for layer in layers], masked, color="tab:blue")
  ax2.set_xscale("log")
  ax2.set(xlabel="weights in layer", ylabel="% of weights masked", title="Masked share vs layer size",
          ylim=(0, 100))
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def summary_markdown(summary: dict) -> str:
  pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
  out = ["# Summary", "",
         "| regime | epochs | best epoch (by) | test acc at best | val acc at best | final test acc "
         "| masked |", "|---|---|---|---|---|---|---|"]
  for regime, r in summary["regimes"].items():
    out.append(f"| {regime} | {r['epochs']} | {r['best_epoch']} ({r['best_on']}) | "
               f"{pct(r['best_test_accuracy'])} | {pct(r['best_val_accuracy'])} | "
               f"{pct(r['final_test_accuracy'])} | {pct(r['masked_fraction'])} |")
  if summary["layers"]:
    out += ["", "## Mask of the best mask checkpoint", "",
            *masks.layer_table(summary["layers"], pct)]
    total = sum(layer["n_weights"] for layer in summary["layers"])
    out.append(f"| **total** | | {total:,} | {pct(masks.masked_share(summary['layers']))} |")
  text = provenance.summary_text(summary["provenance"])
  return "\n".join(out + (["", text] if text else [])) + "\n"


def write_report(workdir: str | Path, summary: dict | None = None) -> Path:
  """WORKDIR/report/{curves.png, mask_utilization.png, summary.md} from `summary` (default:
  `summarize(workdir)`); returns summary.md's path."""
  workdir = Path(workdir)
  summary = {**(summarize(workdir) if summary is None else summary),
             "provenance": provenance.of_runs(workdir)}
  if not summary["regimes"]:
    raise FileNotFoundError(f"{workdir} holds no mask/, weight/ or finetune/ runs")
  with replaced_atomically(workdir / "report") as out:
    plot_curves(summary, out / "curves.png")
    if summary["layers"]:
      plot_mask_utilization(summary["layers"], out / "mask_utilization.png")
    (out / "summary.md").write_text(summary_markdown(summary))
  return workdir / "report" / "summary.md"

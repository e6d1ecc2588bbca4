"""The lottery-ticket report: accuracy against % of weights kept, tickets against their
controls and beside supermasks. `python -m smjax.report WORKDIR [--supermasks STUDY...]`.

Writes WORKDIR/report/{summary.md, tickets.json, tickets.png}.
"""

from __future__ import annotations

from pathlib import Path

from smjax import checkpoint, provenance
from smjax.config import best_metric
from smjax.reports import masks
from smjax.reports.study import epochs_to_99, machine, mean_std_text, seeds_with_runs
from smjax.reports.runs import summarize
from smjax.statistics import mean_std
from smjax.workdir import (best_line, is_run, read_config, read_metrics, replaced_atomically,
                           seed_dirs, wall_clock, wall_clock_text, write_json_atomic)

CONTROLS = {"reinit": ("same mask, random reinit", "tab:gray"),
            "random": ("random mask, same layer densities", "tab:red")}



def _run_row(run_dir: Path) -> dict | None:
  """A finished round's numbers (None while it is unfinished)."""
  metrics = read_metrics(run_dir)
  if not is_run(run_dir):
    return None
  config = read_config(run_dir)
  if not metrics or len(metrics) < config["epochs"]:
    return None
  best = best_line(metrics, best_metric(config.get("protocol", "")))
  return {"kept": 1 - masks.mask_table(run_dir)["masked_fraction"],
          "best_test_accuracy": best["test_accuracy"],
          "final_test_accuracy": metrics[-1]["test_accuracy"],
          "epochs_to_99": epochs_to_99(metrics),
          "seconds": sum(m["seconds"] for m in metrics)}


def seeds_with_rounds(workdir: Path) -> dict[int, Path]:
  """{seed: WORKDIR/seed<seed>} for every seed folder that holds ticket rounds."""
  return seed_dirs(workdir, lambda path: (path / "round0").is_dir())


def collect(workdir: Path) -> dict:
  """{'round<R>' or 'round<R>_<control>': {seed: row}} over the finished runs."""
  rows = {}
  for seed, seed_dir in seeds_with_rounds(workdir).items():
    for run_dir in sorted(seed_dir.glob("round*")):
      row = _run_row(run_dir)
      if row is not None:
        rows.setdefault(run_dir.name, {})[seed] = row
  return rows


def supermask_rows(workdir: Path, supermask_studies: list[Path]) -> list[dict]:
  """Per seed of each supermask study (`--seeds` of `--regime all`, one density each) that the
  ticket study also holds: the supermask's share kept, its test accuracy and its fine-tune's,
  and its overlap with that seed's ticket of the nearest share kept (Jaccard and agreement,
  per layer and in total, beside the chance level of independent masks of those densities)."""
  from smjax import masking
  tickets = collect(workdir)
  rows = []
  for study_dir in map(Path, supermask_studies):
    for seed, seed_dir in seeds_with_runs(study_dir).items():
      regimes = summarize(seed_dir)["regimes"]
      if "mask" not in regimes:
        continue
      kept = 1 - regimes["mask"]["masked_fraction"]
      rounds = {name: by_seed[seed] for name, by_seed in tickets.items()
                if "_" not in name and name != "round0" and seed in by_seed}
      row = {"study": str(study_dir), "seed": seed, "kept": kept,
             "supermask_test_accuracy": regimes["mask"]["best_test_accuracy"],
             "finetuned_test_accuracy": regimes.get("finetune", {}).get("best_test_accuracy")}
      if rounds:
        nearest = min(rounds, key=lambda name: abs(rounds[name]["kept"] - kept))
        ticket = checkpoint.restore(workdir / f"seed{seed}" / nearest)
        mask = checkpoint.restore(seed_dir / "mask")
        overlap = masking.compare_masks(ticket["masks"], mask["masks"], mask["meta"].get("layers"))
        row.update(ticket_round=nearest, ticket_kept=rounds[nearest]["kept"],
                   ticket_test_accuracy=rounds[nearest]["best_test_accuracy"], overlap=overlap)
      rows.append(row)
  return sorted(rows, key=lambda r: (-r["kept"], r["seed"]))


def write_report(workdir: str | Path, supermask_studies: list[Path] = ()) -> Path:
  """WORKDIR/report/{summary.md, tickets.json, tickets.png}, with the supermasks of
  `supermask_studies` beside the tickets where given."""
  import jax
  workdir = Path(workdir)
  rows = collect(workdir)
  if not rows:
    raise FileNotFoundError(f"{workdir} holds no finished ticket rounds (seed<N>/round<R>/)")
  numbers = ("kept", "best_test_accuracy", "final_test_accuracy", "epochs_to_99")
  table = {name: {k: mean_std([r[k] for r in by_seed.values()]) for k in numbers}
           for name, by_seed in rows.items()}
  command = workdir / "command.txt"
  firsts = sorted(workdir.glob("seed*/round1/config.json"))
  rewind_epoch = read_config(firsts[0].parent).get("rewind_epoch", 0) if firsts else 0
  result = {"runs": table, "per_seed": rows, "supermasks": supermask_rows(workdir, supermask_studies),
            "rewind": f"round0's weights after epoch {rewind_epoch}" if rewind_epoch else "the init",
            "command": command.read_text().strip() if command.exists() else None,
            "epoch_seconds": {kind or "tickets": sum(r["seconds"] for name, by_seed in rows.items()
                                                     if name.partition("_")[2] == kind
                                                     for r in by_seed.values())
                              for kind in ("",) + tuple(CONTROLS)},
            "wall_clock": wall_clock(workdir), "jax_version": jax.__version__,
            "machine": machine(), "provenance": provenance.of_runs(workdir)}
  with replaced_atomically(workdir / "report") as out:
    write_json_atomic(out / "tickets.json", result)
    _plot(table, result["supermasks"], result["rewind"], out / "tickets.png")
    (out / "summary.md").write_text(_markdown(result))
  return workdir / "report" / "summary.md"


def _round_number(name: str) -> int:
  return int(name.removeprefix("round").split("_")[0])


def _series(table: dict, control: str = "") -> list[str]:
  """The ticket rounds (control "") or one control's rounds, in order; a control's line
  starts at round0, the dense network."""
  if not control:
    return sorted((n for n in table if "_" not in n), key=_round_number)
  names = sorted((n for n in table if n.endswith(f"_{control}")), key=_round_number)
  return ["round0"] * ("round0" in table) + names


def _plot(table: dict, supermasks: list[dict], rewind: str, path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  fig, ax = plt.subplots(figsize=(7, 4.5))
  series = [("", f"winning ticket (rewound to {rewind})", "tab:green")] + [
      (c, label, color) for c, (label, color) in CONTROLS.items()]
  for control, label, color in series:
    names = _series(table, control)
    if control and not any(n.endswith(f"_{control}") for n in names):
      continue
    kept = [100 * table[n]["kept"]["mean"] for n in names]
    acc = [100 * table[n]["best_test_accuracy"]["mean"] for n in names]
    err = [100 * (table[n]["best_test_accuracy"]["std"] or 0) for n in names]
    ax.errorbar(kept, acc, yerr=err, marker="o", ms=3, capsize=2, color=color, label=label)
  for key, label, color in (("supermask_test_accuracy", "top-k supermask of the init", "tab:blue"),
                            ("finetuned_test_accuracy", "that supermask, weights fine-tuned",
                             "tab:orange")):
    points = [(100 * r["kept"], 100 * r[key]) for r in supermasks if r.get(key) is not None]
    if points:
      ax.scatter(*zip(*points), marker="s", s=18, color=color, label=label)
  ax.set_xscale("log")
  rounds = _series(table)  # every round labelled at its own density
  ax.set_xticks([100 * table[n]["kept"]["mean"] for n in rounds],
                [f"{100 * table[n]['kept']['mean']:.3g}\nR{_round_number(n)}" for n in rounds],
                fontsize=7)
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  ax.invert_xaxis()
  ax.set(xlabel="% of weights kept in the masked layers (Rn: pruning round n)",
         ylabel="test accuracy at the best epoch (%)",
         title="Lottery-ticket rounds, their controls and supermasks\n"
               "test accuracy against density; mean over seeds, bars ±1 std")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _markdown(result: dict) -> str:
  table = result["runs"]
  controls = [c for c in CONTROLS if any(n.endswith(f"_{c}") for n in table)]
  out = [f"# Lottery tickets (iterative magnitude pruning, rewound to {result['rewind']})", ""]
  if result["command"]:
    out += ["```", result["command"], "```", ""]
  head = ["round", "kept (%)", "ticket: test acc (%)", "epoch reaching 99% of best"]
  for control in controls:
    head += [f"{CONTROLS[control][0]}: test acc (%)", "epoch reaching 99% of best"]
  out += ["Mean ± sample std over seeds; test accuracy at the epoch picked on validation.", "",
          "| " + " | ".join(head + ["n"]) + " |", "|---" * (len(head) + 1) + "|"]
  for name in _series(table):
    row = table[name]
    cells = [str(_round_number(name)), mean_std_text(row["kept"]),
             mean_std_text(row["best_test_accuracy"]), mean_std_text(row["epochs_to_99"], 1, 1)]
    for control in controls:
      other = table.get(f"{name}_{control}")
      cells += [mean_std_text(other["best_test_accuracy"]),
                mean_std_text(other["epochs_to_99"], 1, 1)] if other else ["-", "-"]
    out.append("| " + " | ".join(cells + [str(row["best_test_accuracy"]["n"])]) + " |")
  if result["supermasks"]:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"
    out += ["", "## Supermasks of the same init at matched density", "",
            "Overlap with the seed's ticket of the nearest share kept (all masked layers; chance: "
            "two independent masks of those densities).", "",
            "| seed | supermask kept (%) | supermask test acc (%) | fine-tuned (%) | ticket round (kept %) "
            "| ticket test acc (%) | Jaccard (chance) | agreement (chance) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in result["supermasks"]:
      total = r.get("overlap", {}).get("total")
      overlap = (f"{total['jaccard']:.3f} ({total['chance_jaccard']:.3f}) | "
                 f"{total['agreement']:.3f} ({total['chance_agreement']:.3f})") if total else "- | -"
      ticket = f"{_round_number(r['ticket_round'])} ({pct(r['ticket_kept'])})" if total else "-"
      out.append(f"| {r['seed']} | {pct(r['kept'])} | {pct(r['supermask_test_accuracy'])} | "
                 f"{pct(r['finetuned_test_accuracy'])} | {ticket} | "
                 f"{pct(r.get('ticket_test_accuracy'))} | {overlap} |")
    matched = [r for r in result["supermasks"] if "overlap" in r]
    if matched:
      out += ["", "### Per-layer density profiles", "",
              "| seed | ticket round | layer | ticket kept (%) | supermask kept (%) | Jaccard (chance) |",
              "|---|---|---|---|---|---|"]
      for r in matched:
        for layer in r["overlap"]["layers"]:
          out.append(f"| {r['seed']} | {_round_number(r['ticket_round'])} | {layer['name']} | "
                     f"{pct(layer['kept_a'])} | {pct(layer['kept_b'])} | "
                     f"{layer['jaccard']:.3f} ({layer['chance_jaccard']:.3f}) |")
  hours = ", ".join(f"{kind} {seconds / 3600:.2f} h" for kind, seconds in result["epoch_seconds"].items()
                    if seconds)
  out += ["", wall_clock_text(result.get("wall_clock")) +
          "Time in epochs (training and evaluation), summed over the runs of all seeds "
          f"(runs side by side under --jobs overlap): {hours}; "
          f"jax {result['jax_version']}; {result['machine']}.", "",
          provenance.summary_text(result.get("provenance", {}))]
  return "\n".join(out) + "\n"

"""Lottery tickets beside supermasks: iterative magnitude pruning with rewinding to the init.

    python -m experiments.zhou --regime tickets --set ticket_rounds=10 --seeds 0 1 2

Frankle & Carbin (2019): train the weights (round 0, a weight run); keep the largest |w| of
each layer's surviving weights (`prune_rate` of a hidden layer's survivors and
`prune_rate_output` of the output layer's are pruned per round; `prune_scope="global"` ranks
all layers together at `prune_rate`); rewind the survivors to their values at initialization;
retrain (`run.train_tickets`). A round is a finetune-mode run whose frozen mask comes from
pruning the previous round's best checkpoint (`prune_from`), so `smjax.inspect` reads it
unchanged. The control `round<R>_reinit` trains the same mask from freshly drawn weights
(`reinit_seed`).

Writes WORKDIR/seed<N>/round<R>[_reinit]/ and WORKDIR/report/{summary.md, tickets.json,
tickets.png}; rerunning resumes at the round and epoch where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import traverse_util

from smjax import checkpoint
from smjax.config import Config, best_metric
from smjax.workdir import RunError, read_config, read_metrics, replaced_atomically, write_json_atomic

REINIT_SEED_OFFSET = 10_000  # the control's weights: another seed's init, same data order


def magnitude_masks(params, masks, rates: dict[str, float], scope: str = "layer"):
  """New binary masks keeping the largest |w| among each layer's survivors (`masks != 0`).

  rates: per layer name ('dense1/kernel'), the fraction of its survivors to prune
  (`scope="layer"`); with `scope="global"` the first rate is applied to all survivors ranked
  together. Exactly round(rate * survivors) are pruned; ties go to the earlier index.
  """
  flat_masks = traverse_util.flatten_dict(masks, sep="/")
  flat_params = traverse_util.flatten_dict(params, sep="/")
  names = list(flat_masks)
  alive = {n: np.asarray(flat_masks[n]).ravel() != 0 for n in names}
  magnitude = {n: np.abs(np.asarray(flat_params[n], np.float64)).ravel() for n in names}
  groups = [names] if scope == "global" else [[n] for n in names]
  if scope not in ("layer", "global"):
    raise ValueError(f"prune_scope must be 'layer' or 'global', got {scope!r}")
  kept = {}
  for group in groups:
    values = np.concatenate([np.where(alive[n], magnitude[n], -1.0) for n in group])
    survivors = int(sum(alive[n].sum() for n in group))
    keep_count = survivors - int(round(rates[group[0]] * survivors))
    order = np.argsort(-values, kind="stable")  # largest first; ties: earlier index first
    keep = np.zeros(values.size, bool)
    keep[order[:keep_count]] = True
    offsets = np.cumsum([0] + [alive[n].size for n in group])
    for i, n in enumerate(group):
      kept[n] = keep[offsets[i]:offsets[i + 1]].reshape(np.shape(flat_masks[n])).astype(np.float32)
  return traverse_util.unflatten_dict({tuple(n.split("/")): kept[n] for n in names})


def pruned_start(config: Config) -> dict:
  """The frozen masks of a ticket round: the previous round's best checkpoint pruned."""
  source_dir = Path(config.prune_from)
  if not (source_dir / "config.json").exists():
    raise RunError(f"prune_from={config.prune_from!r} is not a run directory (no config.json)")
  source = read_config(source_dir)
  if source.get("mode") not in ("weight", "finetune"):
    raise RunError(f"{source_dir} is a {source.get('mode')!r} run; prune_from needs trained weights")
  for key in ("model", "dataset", "mask_biases"):
    if source.get(key) != getattr(config, key):
      raise RunError(f"{source_dir} has {key}={source.get(key)!r}, this run {getattr(config, key)!r}")
  best = checkpoint.restore(source_dir, which="best")
  output_layer = best["meta"]["layers"][-1]  # layer names in forward order
  rates = {leaf: config.prune_rate_output if leaf.rsplit("/", 1)[0] == output_layer
           else config.prune_rate for leaf in traverse_util.flatten_dict(best["masks"], sep="/")}
  return {"masks": magnitude_masks(best["state"]["trainable"]["params"], best["masks"], rates,
                                   config.prune_scope)}


def round_configs(config: Config, workdir: Path) -> dict[str, Config]:
  """round0 (weight training of the init), then per round R the ticket (pruned from round
  R-1, rewound to the init) and its random-reinitialization control, in the order to run."""
  configs = {"round0": config.replace(mode="weight")}
  for r in range(1, config.ticket_rounds + 1):
    ticket = config.replace(mode="finetune", prune_from=str(workdir / f"round{r - 1}"), mask_run="")
    configs[f"round{r}"] = ticket
    configs[f"round{r}_reinit"] = ticket.replace(reinit_seed=config.seed + REINIT_SEED_OFFSET)
  return configs


# --------------------------------------------------------------------------
# The report: accuracy against % of weights kept, tickets against their controls.


def _run_row(run_dir: Path) -> dict | None:
  """A finished round's numbers (None while it is unfinished)."""
  from smjax import inspect, study
  from smjax.summary import best_line
  metrics = read_metrics(run_dir)
  if not (run_dir / "config.json").exists():
    return None
  config = read_config(run_dir)
  if not metrics or len(metrics) < config["epochs"]:
    return None
  best = best_line(metrics, best_metric(config.get("protocol", "")))
  return {"kept": 1 - inspect.mask_table(run_dir)["masked_fraction"],
          "best_test_accuracy": best["test_accuracy"],
          "final_test_accuracy": metrics[-1]["test_accuracy"],
          "epochs_to_99": study.epochs_to_99(metrics)}


def seed_dirs(workdir: Path) -> dict[int, Path]:
  """{seed: WORKDIR/seed<seed>} for every seed directory that holds a ticket round."""
  return {int(p.name[4:]): p for p in sorted(Path(workdir).glob("seed*"))
          if p.name[4:].isdigit() and (p / "round0").is_dir()}


def collect(workdir: Path) -> dict:
  """{'round<R>' or 'round<R>_reinit': {seed: row}} over the finished runs."""
  rows = {}
  for seed, seed_dir in seed_dirs(workdir).items():
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
  from smjax import masking, study
  from smjax.summary import summarize
  tickets = collect(workdir)
  rows = []
  for study_dir in map(Path, supermask_studies):
    for seed, seed_dir in study.seed_dirs(study_dir).items():
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
  from smjax import study
  workdir = Path(workdir)
  rows = collect(workdir)
  if not rows:
    raise FileNotFoundError(f"{workdir} holds no finished ticket rounds (seed<N>/round<R>/)")
  numbers = ("kept", "best_test_accuracy", "final_test_accuracy", "epochs_to_99")
  table = {name: {k: study.mean_std([r[k] for r in by_seed.values()]) for k in numbers}
           for name, by_seed in rows.items()}
  command = workdir / "command.txt"
  result = {"runs": table, "per_seed": rows, "supermasks": supermask_rows(workdir, supermask_studies),
            "command": command.read_text().strip() if command.exists() else None}
  with replaced_atomically(workdir / "report") as out:
    write_json_atomic(out / "tickets.json", result)
    _plot(table, result["supermasks"], out / "tickets.png")
    (out / "summary.md").write_text(_markdown(result))
  return workdir / "report" / "summary.md"


def _round_number(name: str) -> int:
  return int(name.removeprefix("round").split("_")[0])


def _plot(table: dict, supermasks: list[dict], path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for suffix, label, color in (("", "winning ticket (rewound to init)", "tab:green"),
                               ("_reinit", "same mask, random reinit", "tab:gray")):
    names = sorted((n for n in table if n.endswith(suffix) and ("_" in n) == bool(suffix)),
                   key=_round_number)
    if suffix:
      names = ["round0"] * ("round0" in table) + names
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
  ax.invert_xaxis()
  ax.set(xlabel="% of weights kept (masked layers)", ylabel="test accuracy at best epoch (%)",
         title="Iterative magnitude pruning: mean over seeds, bars ±1 std")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _markdown(result: dict) -> str:
  table = result["runs"]
  ms = lambda v, scale=100, digits=2: "-" if v["mean"] is None else (
      f"{scale * v['mean']:.{digits}f}" +
      (f" ± {scale * v['std']:.{digits}f}" if v["std"] is not None else ""))
  out = ["# Lottery tickets (iterative magnitude pruning, rewound to the init)", ""]
  if result["command"]:
    out += ["```", result["command"], "```", ""]
  out += ["Mean ± sample std over seeds; test accuracy at the epoch picked on validation.", "",
          "| round | kept (%) | ticket: test acc (%) | epoch reaching 99% of best | random reinit: test acc (%) | epoch reaching 99% of best | n |",
          "|---|---|---|---|---|---|---|"]
  for name in sorted((n for n in table if "_" not in n), key=_round_number):
    row, control = table[name], table.get(f"{name}_reinit")
    out.append(f"| {_round_number(name)} | {ms(row['kept'])} | {ms(row['best_test_accuracy'])} | "
               f"{ms(row['epochs_to_99'], 1, 1)} | "
               f"{ms(control['best_test_accuracy']) if control else '-'} | "
               f"{ms(control['epochs_to_99'], 1, 1) if control else '-'} | "
               f"{row['best_test_accuracy']['n']} |")
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
  return "\n".join(out) + "\n"

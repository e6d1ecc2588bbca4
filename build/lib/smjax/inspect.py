"""Inspect the checkpoints and masks of a run, without model code.

    python -m smjax.inspect WORKDIR                  # config, checkpoints, mask table of the best
    python -m smjax.inspect WORKDIR --step 120 --json
    python -m smjax.inspect WORKDIR --history        # % masked per layer at every checkpoint
    python -m smjax.inspect WORKDIR --compare OTHER  # Jaccard / Hamming / chance, per layer
    python -m smjax.inspect WORKDIR --export masks.npz [--scores]
    python -m smjax.inspect WORKDIR --export-model net.msgpack   # pruned variables for model.apply

WORKDIR is a single-mode run directory or a `--regime all` directory (whose mask/ run is then
the one inspected). Errors end with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import absl.logging
import jax
import numpy as np

from smjax import checkpoint, masking
from smjax.config import best_metric
from smjax.workdir import RunError, read_config, read_metrics


def resolve(workdir: str | Path) -> Path:
  """The single-mode run directory to inspect."""
  workdir = Path(workdir)
  if (workdir / "config.json").exists():
    return workdir
  if (workdir / "mask" / "config.json").exists():
    return workdir / "mask"
  raise checkpoint.CheckpointError(f"{workdir} is not a run directory (no config.json)")


def mask_table(run_dir: Path, step: int | None = None) -> dict:
  """{'step', 'epoch', 'masked_fraction', 'layers': [...]} of one checkpoint (default: best)."""
  restored = checkpoint.restore(run_dir, step=step)
  layers = masking.layer_stats(restored["masks"], restored["meta"].get("layers"))
  total = sum(layer["n_weights"] for layer in layers)
  zeros = sum(layer["n_weights"] * layer["masked_fraction"] for layer in layers)
  return {"step": restored["step"], "epoch": restored["meta"].get("epoch"),
          "masked_fraction": zeros / total if total else 0.0, "n_weights": total,
          "layers": layers}


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:6.2f}%"


def describe(run_dir: Path, step: int | None) -> str:
  config = read_config(run_dir)
  by_epoch = {m["epoch"]: m for m in read_metrics(run_dir)}
  saved = checkpoint.steps(run_dir)
  best = checkpoint.best_step(checkpoint.checkpoint_dir(run_dir),
                              best_metric(config.get("protocol", "")))
  out = [f"run {run_dir}: mode {config['mode']}, model {config['model']}, dataset "
         f"{config['dataset']}, estimator {config['estimator']}, seed {config['seed']}, "
         f"protocol {config['protocol']}, {len(by_epoch)}/{config['epochs']} epochs", "",
         "checkpoint  epoch   val acc  test acc    masked"]
  damaged = checkpoint.damaged_metrics(checkpoint.checkpoint_dir(run_dir))
  for s in sorted(saved + damaged):
    if s in damaged:
      out.append(f"{s:>10}  unreadable (its saved metrics are damaged)")
      continue
    try:
      epoch = checkpoint.read_meta(run_dir, s).get("epoch")
    except checkpoint.CheckpointError as err:
      if not (checkpoint.checkpoint_dir(run_dir) / str(s)).exists():
        out.append(f"{s:>10}  removed by the training run while this was read (rotated away)")
      elif s not in checkpoint.steps(run_dir):
        out.append(f"{s:>10}  being written by the training run")
      else:
        out.append(f"{s:>10}  unreadable: {err}")
      continue
    m = by_epoch.get(epoch, {}) if s == by_epoch.get(epoch, {}).get("step") else {}
    tags = ("best " if s == best else "") + ("latest" if s == saved[-1] else "")
    out.append(f"{s:>10}  {epoch:>5}  {_pct(m.get('val_accuracy'))}  {_pct(m.get('test_accuracy'))}"
               f"  {_pct(m.get('masked_fraction'))}  {tags if m else 'mid-epoch (stopped)'}")
  table = mask_table(run_dir, step)
  out += ["", f"mask of checkpoint {table['step']} (epoch {table['epoch']}):",
          f"{'layer':40s} {'shape':>16s} {'weights':>12s}   masked"]
  for layer in table["layers"]:
    shape = "x".join(map(str, layer["shape"]))
    out.append(f"{layer['name']:40s} {shape:>16s} {layer['n_weights']:>12,d}  "
               f"{_pct(layer['masked_fraction'])}")
  out.append(f"{'total':40s} {'':>16s} {table['n_weights']:>12,d}  {_pct(table['masked_fraction'])}")
  return "\n".join(out)


def export(run_dir: Path, step: int | None, path: Path, scores: bool) -> int:
  """Writes the binary masks (and scores) as flat `name -> array` entries; returns the count."""
  restored = checkpoint.restore(run_dir, step=step)
  arrays = {f"masks/{k}": v for k, v in masking.flatten_masks(restored["masks"]).items()}
  if scores:
    flat = masking.flatten_masks(restored["state"]["trainable"]["scores"])
    arrays.update({f"scores/{k}": v for k, v in flat.items()})
  np.savez(path, **arrays)
  return len(arrays)


def export_model(run_dir: Path, step: int | None, path: Path) -> dict:
  """Writes the effective variables of a checkpoint (every kernel times its binary mask, biases,
  BN parameters and statistics) as a flax msgpack file that `model.apply` takes as is, and
  PATH.json with the model, the input normalization and the per-layer density."""
  from flax import serialization
  from smjax import data
  restored = checkpoint.restore(run_dir, step=step)
  state, config = restored["state"], read_config(run_dir)
  variables = {"params": jax.tree.map(np.asarray, masking.apply_masks(
      state["trainable"]["params"], restored["masks"], rescale=config.get("dynamic_rescale", False)))}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  path.write_bytes(serialization.msgpack_serialize(variables))
  layers = [{"name": layer["name"], "shape": layer["shape"], "n_weights": layer["n_weights"],
             "density": 1 - layer["masked_fraction"]}
            for layer in masking.layer_stats(restored["masks"], restored["meta"].get("layers"))]
  kept = sum(layer["n_weights"] * layer["density"] for layer in layers)
  total = sum(layer["n_weights"] for layer in layers)
  mean, std = data.NORMALIZATION[config["dataset"]]
  info = {"workdir": str(run_dir), "step": restored["step"], "model": config["model"],
          "dataset": config["dataset"], "input": "(uint8 / 255 - mean) / std, NHWC",
          "mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist(),
          "density": kept / total if total else 1.0, "layers": layers}
  path.with_name(path.name + ".json").write_text(json.dumps(info, indent=1) + "\n")
  return info


def compare(run_dir: Path, other: Path, step: int | None) -> dict:
  a, b = checkpoint.restore(run_dir, step=step), checkpoint.restore(other)
  result = masking.compare_masks(a["masks"], b["masks"], a["meta"].get("layers"))
  return {"a": {"workdir": str(run_dir), "step": a["step"]},
          "b": {"workdir": str(other), "step": b["step"]}, **result}


def _compare_text(result: dict) -> str:
  out = [f"{result['a']['workdir']} @ {result['a']['step']}  vs  "
         f"{result['b']['workdir']} @ {result['b']['step']}",
         f"{'layer':40s} {'jaccard':>8s} {'chance':>8s} {'hamming':>10s} {'agree':>8s} {'chance':>8s}"]
  for row in result["layers"] + [{"name": "total", **result["total"]}]:
    out.append(f"{row['name']:40s} {row['jaccard']:8.4f} {row['chance_jaccard']:8.4f} "
               f"{row['hamming']:10,d} {row['agreement']:8.4f} {row['chance_agreement']:8.4f}")
  return "\n".join(out)


def _history_text(history: list[dict]) -> str:
  names = [layer["name"] for layer in history[0]["layers"]] if history else []
  out = ["% masked per layer at each checkpoint", f"{'layer':40s}" +
         "".join(f"{'step ' + str(h['step']):>12s}" for h in history)]
  for i, name in enumerate(names):
    out.append(f"{name:40s}" + "".join(f"{_pct(h['layers'][i]['masked_fraction']):>12s}"
                                       for h in history))
  return "\n".join(out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m smjax.inspect", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the best)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--export", type=Path, metavar="FILE.npz", help="write the masks")
  parser.add_argument("--scores", action="store_true", help="with --export: the scores too")
  parser.add_argument("--export-model", type=Path, metavar="FILE",
                      help="write the pruned network's variables (flax msgpack) and FILE.json")
  parser.add_argument("--compare", metavar="OTHER_WORKDIR", help="overlap with another run's mask")
  parser.add_argument("--history", action="store_true", help="%% masked per layer per checkpoint")
  args = parser.parse_args(argv)
  absl.logging.set_verbosity(absl.logging.ERROR)  # orbax warns about read-only managers
  try:
    run_dir = resolve(args.workdir)
    if args.export_model:
      info = export_model(run_dir, args.step, args.export_model)
      print(f"wrote {args.export_model} (checkpoint {info['step']}, {100 * info['density']:.2f}% "
            f"of masked-layer weights kept) and {args.export_model}.json")
    elif args.export:
      count = export(run_dir, args.step, args.export, args.scores)
      print(f"wrote {count} arrays to {args.export}")
    elif args.compare:
      result = compare(run_dir, resolve(args.compare), args.step)
      print(json.dumps(result) if args.json else _compare_text(result))
    elif args.history:
      history = checkpoint.mask_history(run_dir)
      print(json.dumps(history) if args.json else _history_text(history))
    elif args.json:
      print(json.dumps(mask_table(run_dir, args.step)))
    else:
      print(describe(run_dir, args.step))
  except (checkpoint.CheckpointError, RunError, ValueError, OSError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


def main_exit() -> None:
  """The console script's entry point."""
  sys.exit(main())


if __name__ == "__main__":
  main_exit()

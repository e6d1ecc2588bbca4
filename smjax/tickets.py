"""Lottery tickets beside supermasks: iterative magnitude pruning with rewinding to the init.

    python -m experiments.zhou --regime tickets --set ticket_rounds=10 --seeds 0 1 2

Frankle & Carbin (2019): train the weights (round 0, a weight run); keep the largest |w| of
each layer's surviving weights (`prune_rate` of a hidden layer's survivors and
`prune_rate_output` of the output layer's are pruned per round; `prune_scope="global"` ranks
all layers together at `prune_rate`); rewind the survivors to their values at initialization,
or with `rewind_epoch=k` to round0's weights after epoch k (late rewinding, Frankle et al.
2020); retrain (`run.train_tickets`). A round is a finetune-mode run whose frozen mask comes
from pruning the previous round's best checkpoint (`prune_from`), so `smjax.inspect` reads it
unchanged. Its controls (`ticket_controls`): `round<R>_reinit` trains the same mask from
freshly drawn weights (`reinit_seed`); `round<R>_random` trains the rewound weights under a
random mask with the ticket's per-layer counts (`random_mask_seed`).

Writes WORKDIR/seed<N>/round<R>[_reinit|_random]/ (their report: `smjax.reports.tickets`);
rerunning resumes at the round and epoch where it stopped.
"""

from __future__ import annotations

import math
from pathlib import Path

from flax import traverse_util

from smjax import checkpoint
from smjax.config import Config
from smjax.pruning import (RANDOM_MASK_SEED_OFFSET, REINIT_SEED_OFFSET,  # noqa: F401
                           magnitude_masks, random_masks)
from smjax.workdir import RunError, check_same_network, is_run, read_config


def rewound_weights(run_dir: str | Path, epoch: int) -> dict:
  """{'params', 'batch_stats'} of `run_dir`'s checkpoint at the end of `epoch`."""
  for step in checkpoint.steps(run_dir):
    meta = checkpoint.read_meta(run_dir, step)
    if meta.get("epoch") == epoch and not meta.get("partial"):
      state = checkpoint.restore(run_dir, step=step)["state"]
      return {"params": state["trainable"]["params"], "batch_stats": state["batch_stats"]}
  raise RunError(f"{run_dir} kept no checkpoint of epoch {epoch} to rewind to "
                 f"(it needs keep_every_epochs={epoch})")


def pruned_start(config: Config) -> dict:
  """The start of a ticket round: the previous round's best checkpoint pruned (or that mask's
  counts at random places), with the weights rewound to epoch `rewind_epoch` of `rewind_from`
  unless the round draws fresh ones (`reinit_seed`) or rewinds to the init."""
  source_dir = Path(config.prune_from)
  if not is_run(source_dir):
    raise RunError(f"prune_from={config.prune_from!r} is not a run directory (no config.json)")
  source = read_config(source_dir)
  if source.get("mode") not in ("weight", "finetune"):
    raise RunError(f"{source_dir} is a {source.get('mode')!r} run; prune_from needs trained weights")
  check_same_network(source_dir, config)
  best = checkpoint.restore(source_dir, which="best")
  output_layer = best["meta"]["layers"][-1]  # layer names in forward order
  rates = {leaf: config.prune_rate_output if leaf.rsplit("/", 1)[0] == output_layer
           else config.prune_rate for leaf in traverse_util.flatten_dict(best["masks"], sep="/")}
  masks = magnitude_masks(best["state"]["trainable"]["params"], best["masks"], rates,
                          config.prune_scope)
  if config.random_mask_seed >= 0:
    masks = random_masks(masks, config.random_mask_seed)
  start = {"masks": masks}
  if config.rewind_epoch and config.reinit_seed < 0:
    start.update(rewound_weights(config.rewind_from, config.rewind_epoch))
  return start


def round_configs(config: Config, workdir: Path) -> dict[str, Config]:
  """round0 (weight training of the init; it keeps the epoch to rewind to), then per round R
  the ticket (pruned from round R-1, rewound) and its controls, in the order to run."""
  keep = math.gcd(config.keep_every_epochs, config.rewind_epoch)
  configs = {"round0": config.replace(mode="weight", keep_every_epochs=keep)}
  rewind_from = str(workdir / "round0") if config.rewind_epoch else ""
  controls = {"reinit": {"reinit_seed": config.seed + REINIT_SEED_OFFSET},
              "random": {"random_mask_seed": config.seed + RANDOM_MASK_SEED_OFFSET}}
  for r in range(1, config.ticket_rounds + 1):
    ticket = config.replace(mode="finetune", prune_from=str(workdir / f"round{r - 1}"),
                            rewind_from=rewind_from, mask_run="")
    configs[f"round{r}"] = ticket
    for control in filter(None, config.ticket_controls.split(",")):
      configs[f"round{r}_{control}"] = ticket.replace(**controls[control])
  return configs

"""Put on PYTHONPATH of a subprocess: counts the cross-process gathers that
`smjax.distributed.any_process` makes (stop agreements) and writes the count to
$COUNT_GATHERS_TO.<pid> at exit."""

import atexit
import os
import sys

from jax.experimental import multihost_utils

_calls = [0]
_gather = multihost_utils.process_allgather


def _counted(*args, **kwargs):
  caller = sys._getframe(1).f_code
  if caller.co_name == "any_process" and caller.co_filename.endswith("distributed.py"):
    _calls[0] += 1
  return _gather(*args, **kwargs)


multihost_utils.process_allgather = _counted
atexit.register(lambda: open(f"{os.environ['COUNT_GATHERS_TO']}.{os.getpid()}", "w").write(
    str(_calls[0])))

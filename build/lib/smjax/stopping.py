"""Graceful stops: SIGTERM and Ctrl-C become a request checked at the next step boundary."""

from __future__ import annotations

import contextlib
import signal
import threading


class Stopped(Exception):
  """A run stopped by a signal after checkpointing; rerunning resumes it."""


@contextlib.contextmanager
def stop_requests():
  """Yields a list that becomes non-empty on SIGTERM or SIGINT (checked between steps)."""
  requests = []
  previous = {}
  if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
    handler = lambda signum, frame: requests.append(signum)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield requests
  finally:
    for s, h in previous.items():
      signal.signal(s, h)

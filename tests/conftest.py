"""Tests run on 4 forced CPU host devices, so multi-device code is exercised without accelerators.

The 4 devices' collectives meet in a rendezvous that XLA ends by aborting the whole process when
a device thread is late by more than its termination timeout (40 s): on a heavily loaded machine
that killed the test runner. The timeouts are raised so that a slow machine is only slow."""

import os

import jaxlib.version  # the version only; the backend is not started

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()
if jaxlib.version.__version__.startswith(("0.10.", "0.11.", "0.12.")):  # XLA aborts on unknown flags
  os.environ["XLA_FLAGS"] += (" --xla_cpu_collective_call_terminate_timeout_seconds=3600"
                              " --xla_cpu_collective_timeout_seconds=3600")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

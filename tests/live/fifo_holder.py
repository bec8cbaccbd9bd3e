"""A controller that takes SCHED_FIFO and other knobs on a domain, then waits to be killed.

Run by the live tests as a separate process: python fifo_holder.py LEASE_S DOMAIN [PORT]. It opens a
backend, starts an episode (neighbours), applies FIFO and a few knobs (busy_poll too where the guest
runs the project's service), measures once (the local echo starts), prints one JSON line with what it
holds, and sleeps until the test SIGKILLs it.
"""

from __future__ import annotations

import json
import sys
import time

from conftest import URI

from vvho_env.live import open_backend
from vvho_env.scenarios import load_scenario

HELD = {"vcpu_sched_policy": "fifo", "vcpu_quota": 40000, "vcpu_pinning": "dedicated", "busy_poll_us": 30}

if __name__ == "__main__":
    port = int(sys.argv[3]) if len(sys.argv) > 3 else None
    backend = open_backend(URI, sys.argv[2], port, fifo_lease_s=float(sys.argv[1]))
    backend.reset(0, load_scenario("testbed-echo-v0"))
    applied = backend.apply({k: v for k, v in HELD.items() if k in backend.capabilities().settable})
    backend.measure(1.0)
    print(json.dumps({"applied": applied, "tids": list(backend.vcpu_tids), "helpers": backend.helper_pids(),
                      "snapshot": str(backend.snapshot_path)}), flush=True)
    time.sleep(3600)

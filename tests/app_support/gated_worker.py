"""An engine worker whose start is held until a file exists: a load in
progress for as long as a test wants, as a large model's takes minutes.

    WorkerOptions(python=(sys.executable, __file__, GATE))
    # the worker process starts and waits; touching GATE lets it load
"""

from __future__ import annotations

import os
import runpy
import sys
import time

if __name__ == "__main__":
    gate = sys.argv[1]
    while not os.path.exists(gate):
        time.sleep(0.02)
    # The rest is what WorkerProcess runs: -m qwenhome.app.workers.main --fd N
    module = sys.argv[3]
    sys.argv = [sys.argv[0], *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__")

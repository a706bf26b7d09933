"""A stand-in for the runner holding a secret: VICTIM_TOKEN in its environment (and on argv when passed),
optionally hardened with protect_runner; then it waits to be attacked.

Usage: victim_runner.py CHECKOUT protect|plain [ARG...]. Prints "READY <pid>" once hardened.
"""

import os
import sys
import time

sys.path.insert(0, sys.argv[1])  # the checkout, so runnerlib imports under -I
from runnerlib.security.selfprotect import protect_runner  # noqa: E402

if sys.argv[2] == "protect":
    protect_runner([os.environ["VICTIM_TOKEN"]])
print(f"READY {os.getpid()}", flush=True)
time.sleep(120)

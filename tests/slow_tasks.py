"""A task that sleeps at a chosen moment of ``fit``, so a test can send a signal right then.

``CIRCUITS_PL_TEST_SLOW=sanity``: the first evaluation of a fixed set (the validation set, built
for the sanity validation) sleeps; ``=end``: the first one after training (the test set of the
end-of-fit readout) sleeps. Training blocks are 2-D (steps, batch), fixed sets 1-D (1000 points; the
preflight check of the targets calls the task on 64 points, before anything starts: not then; nor the
readout's check of a form against the task, on float64 points, which the timeline makes during training).
"""

import os
import sys
import time

import torch

_seen = {"training": False, "slept": False}


def sleepy_add(a, b):
    phase = os.environ.get("CIRCUITS_PL_TEST_SLOW")
    if a.dim() >= 2:
        _seen["training"] = True
    elif phase and a.numel() >= 500 and a.dtype == torch.float32 and not _seen["slept"] and \
            _seen["training"] == (phase == "end"):  # float32: a fixed set, not the readout's float64 check points
        _seen["slept"] = True
        print(f"SLOW {phase}", file=sys.stdout, flush=True)
        time.sleep(60)
    return a + b

"""Which fused kernel for which hidden width: µs per network-step of both one-hidden-layer kernels.

    python benchmarks/kernel_widths.py            # widths 2..64, inputs 1 and 2
    python benchmarks/kernel_widths.py --quick    # fewer widths

For N_IN-H-1 nets (sgd, no bias, batch 1000, K = 128 members, one thread) it times
  one-pass  circuits_pl.fused._one_hidden: every unit's sums in registers, loops over units unrolled
  wide      circuits_pl.fused._one_hidden_wide: innermost loops over the batch, unit by unit
and prints which one ``fused.compiled`` picks (one-pass up to ``fused.WIDE`` units). The last line is
machine-readable: ``wide_vs_onepass_16=R`` (2-16-1: the wide kernel's time over the one-pass kernel's).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from circuits_pl import fused

K, BATCH, STEPS = 128, 1000, 40
SGD = (0.1, 0.0, 0.0, 0.0, False, 0.9, 0.999, 1e-8)  # lr, weight_decay, momentum, dampening, nesterov, betas, eps


def time_kernel(make, n_in: int, width: int) -> float:
    """Best of 5 of µs per network-step of the kernel ``make`` builds for an n_in-width-1 net."""
    kernel = fused._jit(make(n_in, width, False, fused.RULE_CODES["sgd"]))
    gen = torch.Generator().manual_seed(0)
    w1 = ((torch.rand(K, width * n_in, generator=gen) - 0.5) * 0.5).numpy()
    w2 = ((torch.rand(K, width, generator=gen) - 0.5) * 0.5).numpy()
    none = np.empty((K, 0), np.float32)
    xs = (torch.rand(STEPS, BATCH * n_in, generator=gen) * 2 - 1).numpy()
    ys = np.ascontiguousarray(xs.reshape(STEPS, BATCH, n_in).sum(-1))
    args = ((w1, w2, none, none), (none,) * 8, xs, ys, 1, *SGD, 0, K)
    kernel(*args)  # compile (or load from numba's cache)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        kernel(*args)
        best = min(best, time.perf_counter() - t0)
    return best / STEPS / K * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="widths 4, 8, 12, 16 only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fused._load_numba()
    widths = [4, 8, 12, 16] if args.quick else [2, 4, 8, 9, 12, 16, 24, 32, 64]
    print(f"K={K} batch={BATCH} sgd, no bias, one thread; µs per network-step (best of 5)")
    print(f"{'sizes':>8}  {'one-pass':>9}  {'wide':>9}  picked")
    ratio16 = None
    for n_in in (1, 2):
        for width in widths:
            one = time_kernel(fused._one_hidden, n_in, width)
            wide = time_kernel(fused._one_hidden_wide, n_in, width)
            picked = "one-pass" if width <= fused.WIDE else "wide"
            print(f"{n_in}-{width}-1".rjust(8) + f"  {one:9.2f}  {wide:9.2f}  {picked}", flush=True)
            if (n_in, width) == (2, 16):
                ratio16 = wide / one
    print(f"wide_vs_onepass_16={ratio16:.2f}")


if __name__ == "__main__":
    main()

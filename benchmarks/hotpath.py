"""Speed of the training hot path: µs per network-step of the block loop, one thread, batch 1000.

    python benchmarks/hotpath.py            # all tables (~2 min on an idle core)
    python benchmarks/hotpath.py --quick    # fewer K

Prints, for 2-2-1 and 2-3-1 and K = 1, 32, 128, 1024, 8192:
  before  the previous loop: matmul-folded gradients ((K*h, n) @ (n, B)), all members per step, SGD
  after   circuits_pl.train_block: per-member bmm (K-independent), cache-sized member chunks, per rule
and the notebook's autograd loop (nn.Sequential + MSELoss + torch.optim.SGD) for the speed-up, plus
a chunk-size sweep at K = 1024 (the measurement behind train_block.CHUNK_BYTES).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from circuits_pl.network import ReLUMLP
from circuits_pl.optim import MemberOptimizer
from circuits_pl.train_block import chunk_members, train_block

BATCH = 1000


def _block(sizes, steps):
    xt = torch.rand(steps, sizes[0], BATCH) * 2 - 1
    return xt, xt.amin(1, keepdim=True)


def _time(fn, steps, members, budget=0.4):
    """Best of 3 of µs per network-step, repeating the block to fill ``budget`` seconds."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            if time.perf_counter() - t0 > budget / 3:
                break
        best = min(best, (time.perf_counter() - t0) / (reps * steps * members) * 1e6)
    return best


def before(net, xt, yt, lr=0.1):
    """The loop before this change (network.py's gradients with matmul folding, then W -= lr * g)."""
    weights = list(net.weights)
    with torch.no_grad():
        for s in range(xt.shape[0]):
            x, y = xt[s], yt[s]
            acts, a = [x], x
            for layer, w in enumerate(weights):
                a = torch.matmul(w, a) if layer == 0 else torch.bmm(w, a)
                if layer < len(weights) - 1:
                    a.relu_()
                    acts.append(a)
            g = (a - y).mul_(2.0 / x.shape[-1])
            grads = [None] * len(weights)
            for layer in range(len(weights) - 1, -1, -1):
                prev = acts[layer]
                grads[layer] = (torch.matmul if layer == 0 else torch.bmm)(g, prev.transpose(-1, -2))
                if layer > 0:
                    g = torch.bmm(weights[layer].transpose(1, 2), g).mul_(prev.sign())
            for p, gr in zip(weights, grads):
                p.add_(gr, alpha=-lr)


def notebook(sizes, xt, yt, lr=0.1):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(a, b, bias=False)] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x, y = xt.transpose(1, 2).contiguous(), yt.transpose(1, 2).contiguous()

    def run():
        for s in range(x.shape[0]):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x[s]), y[s]).backward()
            opt.step()
    return run


def after(sizes, members, rule, xt, yt, chunk=None):
    net = ReLUMLP(sizes, members=members, seed=0)
    opt = MemberOptimizer(net.parameters(), rule=rule, lr=1e-3, momentum=0.9)
    chunk = chunk_members(sizes, BATCH, members) if chunk is None else chunk
    return lambda: train_block(opt, len(net.weights), xt, yt, chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ks = (1, 32, 1024) if args.quick else (1, 32, 128, 1024, 8192)
    print(f"torch {torch.__version__}, 1 thread, batch {BATCH}; µs per network-step (best of 3)")
    for sizes in ((2, 2, 1), (2, 3, 1)):
        name = "-".join(map(str, sizes))
        steps = 20
        xt, yt = _block(sizes, steps)
        run_notebook = notebook(sizes, xt, yt)
        print(f"\n{name} (notebook: its autograd loop, timed next to each row: the machine is shared)")
        print(f"{'K':>6} {'chunk':>6} {'notebook':>9} {'before':>8} {'sgd':>8} {'momentum':>9} {'adam':>8} "
              f"{'sgd x notebook':>15}")
        for k in ks:
            nb = _time(run_notebook, steps, 1)
            n = max(2, min(steps, 20_000 // k))
            xk, yk = xt[:n], yt[:n]
            old = _time(partial(before, ReLUMLP(sizes, members=k, seed=0), xk, yk), n, k) if k <= 1024 else None
            rules = {r: _time(after(sizes, k, r, xk, yk), n, k) for r in ("sgd", "momentum", "adam")}
            old_s = f"{old:8.2f}" if old is not None else f"{'-':>8}"
            print(f"{k:>6} {chunk_members(sizes, BATCH, k):>6} {nb:9.1f} {old_s} {rules['sgd']:8.2f} "
                  f"{rules['momentum']:9.2f} {rules['adam']:8.2f} {nb / rules['sgd']:14.0f}x")
        print("chunk sweep, K = 1024, sgd (µs per network-step):")
        xk, yk = xt[:10], yt[:10]
        for c in (4, 8, 16, 32, 64, 128, 256, 1024):
            print(f"  chunk {c:>5}: {_time(after(sizes, 1024, 'sgd', xk, yk, chunk=c), 10, 1024):.2f}")


if __name__ == "__main__":
    main()

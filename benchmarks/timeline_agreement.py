"""Does the timeline name each member's circuit as the full readout does? At every validation, every member.

The timeline (circuits_pl.timeline) names all K members at once by rounding their units
(circuits_pl.readout.snap); the full readout (circuits_pl.readout.describe_member) reads one member at a
time. This trains each setting (plain ``Trainer.fit``, seed 0, validation every 1000 steps), keeps every
member's weights at every validation, and prints per setting: how many (validation, member) names agree,
how many at the last validation (what results.json's formed_at rests on), the disagreements by kind,
and the cost of both per validation.

    python benchmarks/timeline_agreement.py                  # every setting (~10 minutes on 2 cores)
    python benchmarks/timeline_agreement.py --only min-2-3-1
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import lightning.pytorch as pl
import torch

from circuits_pl.callbacks import StopWhenSolved
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule
from circuits_pl.readout import describe_member
from circuits_pl.readout.snap import Snapper, circuit_name

# name: (task, sizes, lr, members, steps)
SETTINGS = {
    "identity-1-2-1": ("identity", (1, 2, 1), 0.1, 128, 5000),
    "abs-1-8-1": ("abs", (1, 8, 1), 0.1, 64, 10000),
    "add-2-4-1": ("add", (2, 4, 1), 0.3, 64, 20000),
    "min-2-3-1": ("min", (2, 3, 1), 0.1, 256, 10000),
    "max-2-3-1": ("max", (2, 3, 1), 0.1, 128, 10000),
    "min-2-4-1": ("min", (2, 4, 1), 0.3, 64, 20000),
    "min-2-8-1": ("min", (2, 8, 1), 0.1, 64, 20000),
}


class Recorder(pl.Callback):
    """Every member's weights at every scheduled validation of the fit."""

    def __init__(self):
        self.steps: list[int] = []
        self.weights: list[list[torch.Tensor]] = []

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.global_step > 0:
            self.steps.append(int(trainer.global_step))
            self.weights.append([w.detach().clone() for w in module.net.groups[0].weights])


def measure(name: str, task: str, sizes: tuple[int, ...], lr: float, members: int, steps: int) -> list[str]:
    module = CircuitModule(task=task, layer_sizes=list(sizes), members=members, lr=lr, init_seed=0)
    data = CircuitDataModule(task=task, stream_seed=0, steps_per_batch=500)
    rec = Recorder()
    trainer = pl.Trainer(max_steps=steps, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[rec, StopWhenSolved("never")])
    trainer.fit(module, data)
    x = data.fixed_set("test").tensors[0].double()
    snapper = Snapper(module.task, sizes)
    agree = total = last_agree = 0
    kinds: Counter = Counter()
    snap_s = full_s = 0.0
    for v, ws in enumerate(rec.weights):
        t0 = time.perf_counter()
        fast = snapper.names(snapper.keys(ws))
        snap_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        full = [circuit_name(describe_member([w[k] for w in ws], module.task, x, to_formula=False))
                for k in range(members)]
        full_s += time.perf_counter() - t0
        same = [a[0] == b[0] for a, b in zip(fast, full)]
        agree += sum(same)
        total += members
        if v == len(rec.weights) - 1:
            last_agree = sum(same)
        for a, b, ok in zip(fast, full, same):
            if not ok:
                kinds[(a[0], b[0])] += 1
    n = len(rec.steps)
    lines = [f"{name}: {members} members x {n} validations: names agree {agree}/{total} ({agree / total:.1%}); "
             f"at the last validation {last_agree}/{members}; per validation: timeline {1e3 * snap_s / n:.1f} ms "
             f"(cache of {len(snapper._names)} keys), full readout {1e3 * full_s / n:.0f} ms"]
    for (a, b), count in kinds.most_common(6):
        lines.append(f"    {count}x timeline {a!r} vs readout {b!r}")
    return lines


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(SETTINGS))
    args = parser.parse_args()
    for name in args.only or list(SETTINGS):
        print("\n".join(measure(name, *SETTINGS[name])), flush=True)


if __name__ == "__main__":
    main()

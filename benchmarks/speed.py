"""Speed of circuits_pl against the notebook's own training loop, and where the time goes, in one process.

    python benchmarks/speed.py                    # K = 1, 32, 128, 1024, 8192, with memory: ~10 minutes
    python benchmarks/speed.py --quick            # K = 1, 128, 1024, no memory column: ~2 minutes
    python benchmarks/speed.py --plot speed.png   # also draw µs per network-step against K
    python benchmarks/speed.py --device cuda      # on a GPU: member-steps/s for K = 1k, 10k, 100k

All on the notebook's 2-2-1 ``add`` network, batch 1000, lr 1e-4, one torch thread. Every figure
is the median of several interleaved rounds (machine noise hits every loop alike), shown with the
spread (min-max) of the rounds. Both engines run side by side in the same rounds (``--model.engine``:
``fused``, the default on the CPU, and ``torch``). Per K, in µs per network-step (one SGD step of one
member):

- ``step torch`` / ``step fused``: ``train_block`` alone, no Lightning: forward, hand-derived gradients
  and the SGD update of all K members at once (one member chunk), over blocks of distinct batches of
  the size ``fit`` uses at this K (``cadence.steps_per_batch_limit``);
- ``data``: one training block of the stream (``UniformBlocks.block``: inputs and targets), per step,
  shared by the K members (so divided by K);
- ``loop``: the rest of a bare fused ``fit`` (no validation, checkpoints, logger or progress bar):
  Lightning's per-block bookkeeping and the module's own work around the step;
- ``val/ckpt/log``: what the defaults add (validation every 1000 steps plus one at the end, best
  and last checkpoints, CSV logging, progress bar): ``fit`` minus the bare ``fit``;
- ``fit``: ``fit`` as ``python -m circuits_pl fit`` builds it (fused engine), timed from the first
  training batch to the end of training (no start-up, no test); ``fit torch``: the same with
  ``--model.engine torch``;
- peak memory per member: peak-RSS growth (``VmHWM`` after resetting it) of a subprocess over a
  ``fit`` of at most 200 steps, divided by K (at K = 1 that is mostly the 100-step block of inputs).

Then the notebook's loop (draw a batch, forward, MSE, zero_grad, backward, SGD step), and the wall
time of ``python -m circuits_pl fit --task min`` with defaults in a fresh process: with the torch
engine, with the fused engine and an empty numba cache (``NUMBA_CACHE_DIR``: the first run after an
install, the kernel compiled), and with that cache warm.

The last line is machine-readable:
``single_vs_notebook=R1 ensemble128_vs_notebook=R2 ensemble1024_vs_notebook=R3 fused_vs_torch_step=F128
fused_vs_torch_step_k1=F1 min_fit_seconds=S min_fit_cold_seconds=C min_fit_torch_seconds=T ddp2_vs_single=R4
kb_per_member_231=M timeline_overhead=TL`` (F: ``step torch`` over ``step fused`` at K = 128 and K = 1; S, C, T:
the three ``fit --task min`` walls above; R4 from ``benchmarks/scale.py``: K = 128 trained by 2 DDP ranks against 1
process, 20k steps; M: peak memory per member of a 2-3-1 ``fit`` with K = 8192, batch 1000; TL: the time the
timeline takes naming every member's circuit at every validation over the rest of ``fit --task min``, K = 1024,
3000 steps, validation every 1000).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

THREADS = 1
LAYER_SIZES = (2, 2, 1)
BATCH = 1000
LR = 1e-4
# SGD steps per fit, per K: every fit a few seconds at most. Small K runs past the first validation
# (every 1000 steps); K >= 1024 runs only a block or two, so its val/ckpt/log share (one validation
# and checkpoint at the end) is an upper bound of the default cadence's.
FIT_STEPS = {1: 10_000, 32: 2000, 128: 1000, 1024: 200, 8192: 100}
FULL_KS = (1, 32, 128, 1024, 8192)
MEMORY_231_K = 8192  # the memory figure: 2-3-1, batch 1000 (goal <= 40 KB per member)
QUICK_KS = (1, 128, 1024)


def notebook_loop(steps: int) -> float:
    """Seconds per step of the notebook's own loop (In [2] ``train``), 2-2-1, batch 1000, lr 1e-4."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False))
    loss_fn = torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    for _ in range(steps):
        model.train()
        x = torch.rand((BATCH, 2)) * 2 - 1
        y = x.sum(dim=1, keepdims=True)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def step_alone(members: int, steps: int, engine: str = "torch") -> float:
    """Seconds per network-step of ``train_block`` (forward, hand-derived gradients and SGD update of
    all members at once, one member chunk), no Lightning, over blocks of distinct batches as large as
    ``fit`` makes them at this K (at least ``steps`` steps in all), laid out as ``fit`` hands them over (the
    transposed view of the stream's block: the torch engine copies it batch-last, the fused one reads it)."""
    from circuits_pl.cadence import steps_per_batch_limit
    from circuits_pl.network import ReLUMLP
    from circuits_pl.optim import MemberOptimizer
    from circuits_pl.stream import uniform_inputs
    from circuits_pl.train_block import train_block

    block = steps_per_batch_limit(members, BATCH)
    net = ReLUMLP(LAYER_SIZES, members=members, seed=0)
    optimizer = MemberOptimizer(net.parameters(), lr=LR)
    x = uniform_inputs(block * BATCH, 2, seed=1).reshape(block, BATCH, 2)  # a block as the stream draws it
    xt, yt = x.transpose(1, 2), x.sum(2, keepdim=True).transpose(1, 2)  # (S, in, B), (S, 1, B): views, as fit
    train_block(optimizer, len(net.weights), xt[:1], yt[:1], chunk=members, engine=engine)  # warm-up
    blocks = -(-steps // block)
    start = time.perf_counter()
    for _ in range(blocks):
        train_block(optimizer, len(net.weights), xt, yt, chunk=members, engine=engine)
    return (time.perf_counter() - start) / (blocks * block) / members


def data_per_step(blocks: int = 20, steps_per_block: int = 100) -> float:
    """Seconds per SGD step of drawing the training stream (inputs and targets), all members together."""
    from circuits_pl.stream import UniformBlocks
    from circuits_pl.tasks import get_task

    stream = UniformBlocks(get_task("add"), BATCH, steps_per_block, seed=0)
    start = time.perf_counter()
    for b in range(blocks):
        stream.block(b * steps_per_block, steps_per_block)
    return (time.perf_counter() - start) / (blocks * steps_per_block)


class _TrainTimer:
    """Times the training loop: first training batch to the end of training (no start-up, no test)."""

    def __init__(self) -> None:
        import lightning.pytorch as pl

        timer = self

        class Timer(pl.Callback):
            def on_train_batch_start(self, trainer, *args):
                if timer.start is None:
                    timer.start, timer.step0 = time.perf_counter(), trainer.global_step

            def on_train_end(self, trainer, *args):
                timer.seconds = time.perf_counter() - timer.start
                timer.steps = trainer.global_step - timer.step0

        self.callback = Timer()
        self.start = None
        self.step0 = 0
        self.seconds = 0.0
        self.steps = 0


BARE = ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar",
        "false", "--trainer.val_check_interval", "1000000", "--trainer.log_every_n_steps", "0", "--figures", "false"]


def fit_cli(steps: int, members: int, root: str, bare: bool = False, sizes: str = "2-2-1", engine: str = "auto"):
    """The CLI's trainer, model and data for ``fit`` (defaults; the notebook's lr, no early stop)."""
    from circuits_pl.cli import CircuitsCLI

    args = ["--task", "add", "--model.members", str(members), "--model.lr", str(LR), "--model.layer_sizes", sizes,
            "--trainer.max_steps", str(steps), "--stop.when", "never", "--trainer.default_root_dir", root,
            "--threads", str(THREADS), "--model.engine", engine] + (BARE if bare else [])
    return CircuitsCLI(args=args, run=False)


def circuits_pl_loop(steps: int, members: int, root: str, bare: bool = False, engine: str = "auto") -> float:
    """Seconds per network-step of ``fit`` (the training loop only)."""
    cli = fit_cli(steps, members, root, bare, engine=engine)
    timer = _TrainTimer()
    cli.trainer.callbacks.append(timer.callback)
    # the progress bar and prints, not what we measure
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        cli.trainer.fit(cli.model, cli.datamodule)
    return timer.seconds / timer.steps / members


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_child(members: int, sizes: str) -> None:
    """In a fresh process: peak RSS growth over one ``fit`` with K members, as JSON on stdout."""
    _quiet()
    with tempfile.TemporaryDirectory() as root:
        cli = fit_cli(min(FIT_STEPS.get(members, 100), 200), members, root, sizes=sizes)
        # Reset the peak RSS (VmHWM) to the current RSS: importing Lightning peaks higher than
        # anything after it, so the lifetime peak (ru_maxrss) would hide the fit.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kb("VmRSS") * 1024
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            cli.trainer.fit(cli.model, cli.datamodule)
    peak = _status_kb("VmHWM") * 1024
    print(json.dumps({"members": members, "peak_growth_bytes": max(peak - before, 0)}))


def peak_memory_per_member(members: int, sizes: str = "2-2-1") -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(members), "--memory-sizes", sizes],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth_bytes"] / members


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=None if env is None else {**os.environ, **env})
    return time.perf_counter() - start


def min_fit_walls(rounds: int) -> dict[str, list[float]]:
    """Wall seconds of ``python -m circuits_pl fit --task min`` (defaults) in fresh processes, interleaved:
    the torch engine; the fused engine with an empty numba cache (the first run after an install: its
    kernel compiled); the fused engine with that cache filled by the previous run."""
    walls: dict[str, list[float]] = {"torch": [], "cold": [], "warm": []}
    cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", "min"]
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            walls["torch"].append(wall(cmd + ["--model.engine", "torch", "--trainer.default_root_dir", root], env))
            walls["cold"].append(wall(cmd + ["--trainer.default_root_dir", root], env))
            walls["warm"].append(wall(cmd + ["--trainer.default_root_dir", root], env))
    return walls


def _quiet() -> None:
    import logging
    import warnings

    torch.set_num_threads(THREADS)
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _cell(values: list[float], scale: float = 1e6) -> str:
    """Median with the spread of the rounds: ``13.9 (12.1-15.0)``."""
    med = statistics.median(values) * scale
    return f"{med:.2f} ({min(values) * scale:.2f}-{max(values) * scale:.2f})"


def measure(ks: tuple[int, ...], rounds: int, quick: bool) -> tuple[dict, list[float]]:
    """Per K and column, one value per round (seconds per network-step); and the notebook's rounds."""
    cols = ("step_torch", "step", "data", "fit_bare", "fit", "fit_torch")
    times: dict[int, dict[str, list[float]]] = {k: {c: [] for c in cols} for k in ks}
    notebook: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        for engine in ("fused", "torch"):  # warm-up: first-call costs of Lightning, torch and the kernel
            circuits_pl_loop(200, 1, root, engine=engine)
        for r in range(rounds):
            notebook.append(notebook_loop(2000 if quick else 5000))
            for k in ks:
                steps = FIT_STEPS[k] if not (quick and k == 1) else 5000
                t = times[k]
                step_steps = max(10, min(5000, 500_000 // k))
                t["step_torch"].append(step_alone(k, step_steps, "torch"))
                t["step"].append(step_alone(k, step_steps, "fused"))
                t["data"].append(data_per_step() / k)
                t["fit_bare"].append(circuits_pl_loop(steps, k, root, bare=True, engine="fused"))
                t["fit"].append(circuits_pl_loop(steps, k, root, engine="fused"))
                t["fit_torch"].append(circuits_pl_loop(steps, k, root, engine="torch"))
            print(f"round {r + 1}/{rounds}: notebook {notebook[-1] * 1e6:.1f} µs; fit "
                  + "  ".join(f"K={k} {times[k]['fit'][-1] * 1e6:.1f}" for k in ks) + " µs per network-step",
                  file=sys.stderr)
    for t in times.values():  # derived per round, then the median of the rounds
        t["loop"] = [b - s - d for b, s, d in zip(t["fit_bare"], t["step"], t["data"])]
        t["overhead"] = [f - b for f, b in zip(t["fit"], t["fit_bare"])]
    return times, notebook


def plot(times: dict, notebook: float, path: str) -> None:
    """µs per network-step against K, log-log (matplotlib's Figure API, no pyplot)."""
    from matplotlib.figure import Figure

    ks = sorted(times)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for col, label in [("fit", "fit (defaults)"), ("fit_bare", "fit, no val/ckpt/log"), ("step", "step alone"),
                       ("fit_torch", "fit, torch engine"), ("step_torch", "step alone, torch engine"),
                       ("data", "data (shared by K)")]:
        ax.plot(ks, [statistics.median(times[k][col]) * 1e6 for k in ks], marker="o", label=label)
    ax.axhline(notebook * 1e6, color="grey", linestyle="--", label="notebook loop (1 net)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("members K (2-2-1, batch 1000, one thread)")
    ax.set_ylabel("µs per network-step")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 1, 128, 1024, fewer steps, no memory column")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--plot", metavar="PATH", help="write µs per network-step against K (log-log) as a PNG")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: member-steps/s of the training step on the GPU for K = 1k, 10k, 100k instead")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-sizes", default="2-2-1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.memory_sizes)
        return
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.exit(2, "error: --device cuda: torch sees no CUDA GPU on this machine (torch.cuda.is_available() "
                           "is False); run without --device for the CPU figures\n")
        cuda_throughput()
        return
    if args.plot and Path(args.plot).parent.is_dir() is False:
        parser.exit(2, f"error: --plot {args.plot}: directory {Path(args.plot).parent} does not exist\n")
    if args.rounds < 1:
        parser.exit(2, f"error: --rounds must be at least 1, got {args.rounds}\n")
    _quiet()
    ks = QUICK_KS if args.quick else FULL_KS
    times, notebook_rounds = measure(ks, args.rounds, args.quick)
    memory = {} if args.quick else {k: peak_memory_per_member(k) for k in ks}
    memory_231 = peak_memory_per_member(MEMORY_231_K, "2-3-1")
    import_s = statistics.median(wall([sys.executable, "-c", "import circuits_pl.cli"]) for _ in range(3))
    walls = min_fit_walls(2 if args.quick else 3)
    min_fit = {key: statistics.median(v) for key, v in walls.items()}

    nb = statistics.median(notebook_rounds)
    print(f"\ncircuits_pl speed, torch {torch.__version__}, {THREADS} torch thread, {os.cpu_count()} CPUs, "
          f"{'-'.join(map(str, LAYER_SIZES))} add, batch {BATCH}; median (min-max) of {args.rounds} interleaved rounds")
    print(f"notebook loop (autograd, 1 net): {_cell(notebook_rounds)} µs per step")
    print("µs per network-step:")
    header = ["K", "step torch", "step fused", "data", "loop", "val/ckpt/log", "fit", "fit torch",
              "fit vs notebook", "peak KB/member"]
    widths = [6, 21, 21, 21, 21, 21, 21, 21, 16, 15]
    print("".join(h.rjust(w) for h, w in zip(header, widths)))
    for k in ks:
        t = times[k]
        mem = f"{memory[k] / 1024:.1f}" if k in memory else "-"
        row = [str(k), _cell(t["step_torch"]), _cell(t["step"]), _cell(t["data"]), _cell(t["loop"]),
               _cell(t["overhead"]), _cell(t["fit"]), _cell(t["fit_torch"]), f"{nb / statistics.median(t['fit']):.1f}x",
               mem]
        print("".join(c.rjust(w) for c, w in zip(row, widths)))
    print(f"fit steps per K: {', '.join(f'{k}: {5000 if args.quick and k == 1 else FIT_STEPS[k]}' for k in ks)} "
          "(validation every 1000 steps and once at the end)")
    print("loop and val/ckpt/log are differences of noisy figures, per round: a negative value is below the noise")
    print(f"fit --task min (defaults), wall, median (min-max) of {len(walls['torch'])}: torch engine "
          f"{_cell(walls['torch'], 1)} s; fused, empty numba cache {_cell(walls['cold'], 1)} s; fused, warm "
          f"{_cell(walls['warm'], 1)} s; import circuits_pl.cli alone: {import_s:.1f} s")
    print(f"peak memory per member, 2-3-1, batch {BATCH}, K = {MEMORY_231_K}: {memory_231 / 1024:.1f} KB "
          f"(100k members: {memory_231 * 100_000 / 2**30:.2f} GiB)")
    if args.plot:
        plot(times, nb, args.plot)
        print(f"plot: {args.plot}")
    ratio = {k: nb / statistics.median(times[k]["fit"]) for k in ks}
    engines = {k: statistics.median(times[k]["step_torch"]) / statistics.median(times[k]["step"]) for k in ks}
    ddp2 = ddp2_vs_single(2 if args.quick else 3)
    timeline = timeline_overhead(1 if args.quick else 3)
    print(f"timeline (every member's circuit at every validation), fit --task min K={TIMELINE_K} {TIMELINE_STEPS} "
          f"steps: {_cell(timeline, 100)} % of the rest of fit")
    print(f"single_vs_notebook={ratio[1]:.2f} ensemble128_vs_notebook={ratio[128]:.1f} "
          f"ensemble1024_vs_notebook={ratio[1024]:.1f} fused_vs_torch_step={engines[128]:.1f} "
          f"fused_vs_torch_step_k1={engines[1]:.1f} min_fit_seconds={min_fit['warm']:.1f} "
          f"min_fit_cold_seconds={min_fit['cold']:.1f} min_fit_torch_seconds={min_fit['torch']:.1f} "
          f"ddp2_vs_single={ddp2:.2f} kb_per_member_231={memory_231 / 1024:.1f} "
          f"timeline_overhead={statistics.median(timeline):.3f}")


TIMELINE_K, TIMELINE_STEPS = 1024, 3000


def timeline_overhead(rounds: int) -> list[float]:
    """Per round, the timeline's share of ``fit``: seconds spent naming every member's circuit (the
    timeline's own clock) over the rest of the training loop (timed like ``fit``). ``fit --task min`` with
    its defaults (2-3-1, lr 0.1, validation every 1000 steps, checkpoints), K = 1024, 3000 steps: the members
    form their circuits, so the names are worked out as a real run works them out."""
    from circuits_pl.cli import CircuitsCLI

    shares = []
    with tempfile.TemporaryDirectory() as root:
        for _ in range(rounds):
            cli = CircuitsCLI(args=["--task", "min", "--model.members", str(TIMELINE_K), "--trainer.max_steps",
                                    str(TIMELINE_STEPS), "--stop.when", "never", "--trainer.default_root_dir", root,
                                    "--threads", str(THREADS), "--trainer.enable_progress_bar", "false",
                                    "--figures", "false"], run=False)
            timer = _TrainTimer()
            cli.trainer.callbacks.append(timer.callback)
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                cli.trainer.fit(cli.model, cli.datamodule)
            spent = cli.model.timeline.seconds
            shares.append(spent / (timer.seconds - spent))
            print(f"timeline: {spent:.2f} s of fit {timer.seconds:.2f} s (K={TIMELINE_K}, {TIMELINE_STEPS} steps, "
                  f"{len(cli.model.timeline.steps)} validations)", file=sys.stderr)
    return shares


def ddp2_vs_single(rounds: int) -> float:
    """K = 128 of 2-2-1 trained by one process and by two DDP ranks (benchmarks/scale.py), same run
    (the default engine: fused)."""
    from scale import DEFAULT_STEPS, train_seconds  # benchmarks/ is the script's directory, first on sys.path

    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for devices in (1, 2):
                times[devices].append(train_seconds(128, DEFAULT_STEPS, devices, Path(tmp) / f"{devices}-{r}"))
    return statistics.median(times[1]) / statistics.median(times[2])


CUDA_KS = (1_000, 10_000, 100_000)


def cuda_throughput(steps: int = 200, block: int = 100, device: str = "cuda", ks: tuple[int, ...] = CUDA_KS) -> None:
    """Member-steps/s on the GPU (2-2-1 and 2-3-1, batch 1000): the chunked training step of
    ``fit`` (``train_block``) on blocks of the training stream, each drawn on the CPU and moved to
    the GPU once (as ``fit`` does), and the whole ``fit`` as the CLI builds it."""
    from circuits_pl.network import ReLUMLP
    from circuits_pl.optim import MemberOptimizer
    from circuits_pl.stream import UniformBlocks
    from circuits_pl.tasks import get_task
    from circuits_pl.train_block import chunk_members, train_block

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"circuits_pl on {name}, torch {torch.__version__}, batch {BATCH}, "
          f"{steps} steps; member-steps/s")
    print("".join(h.rjust(w) for h, w in zip(["sizes", "K", "train_block", "fit", "fit s"], [8, 9, 16, 16, 9])))
    for sizes in ((2, 2, 1), (2, 3, 1)):
        stream = UniformBlocks(get_task("add"), BATCH, block, seed=0)
        for k in ks:
            net = ReLUMLP(sizes, members=k, seed=0).to(device)
            opt = MemberOptimizer(net.parameters(), lr=LR)
            chunk = chunk_members(sizes, BATCH, k)
            elapsed = 0.0
            for b in range(steps // block + 1):  # the first block warms up (kernels, allocator)
                x, y = stream.block(b * block, block)
                xt = x.transpose(1, 2).contiguous().to(device)
                yt = y.transpose(1, 2).contiguous().to(device)
                synchronize()
                start = time.perf_counter()
                train_block(opt, len(net.weights), xt, yt, chunk)
                synchronize()
                elapsed += (time.perf_counter() - start) if b else 0.0
            step_rate = k * (steps // block) * block / elapsed
            with tempfile.TemporaryDirectory() as root:
                cmd = [sys.executable, "-m", "circuits_pl", "fit", "--task", "add", "--model.layer_sizes",
                       "-".join(map(str, sizes)), "--model.members", str(k), "--model.lr", str(LR),
                       "--trainer.max_steps", str(steps), "--stop.when", "never", "--trainer.accelerator",
                       "gpu" if device.type == "cuda" else "cpu",
                       "--trainer.devices", "1", "--figures", "false", "--trainer.default_root_dir", root]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                (results,) = Path(root).glob("lightning_logs/version_*/results.json")
                fit_s = float(json.loads(results.read_text())["train_seconds"])
            row = ["-".join(map(str, sizes)), f"{k:,}", f"{step_rate:,.0f}", f"{k * steps / fit_s:,.0f}",
                   f"{fit_s:.2f}"]
            print("".join(c.rjust(w) for c, w in zip(row, [8, 9, 16, 16, 9])))


if __name__ == "__main__":
    main()

"""Checks of a parsed command before anything is built or written: one line each, no run directory.

Called by ``circuits_pl.cli.CircuitsCLI``: :func:`normalise_argv` and :func:`check_config_files`
before jsonargparse reads the command line, :func:`check_run` before the classes are instantiated.
Each raises :class:`circuits_pl.errors.CircuitsError` (printed as ``error: ...``, exit 2).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import torch
import yaml
from jsonargparse import Namespace

from circuits_pl.cadence import Cadence, is_step_count
from circuits_pl.errors import CircuitsError
from circuits_pl.memory import (
    RunSize,
    available_bytes,
    checkpoint_bytes,
    estimate,
    gib,
    largest_fitting,
    parameters_per_member,
)
from circuits_pl.strategy import is_member_parallel
from circuits_pl.sweep import Cell, Sweep, parse_positive_list, parse_sizes_list
from circuits_pl.tasks import get_task
from circuits_pl.train_block import engine_problem
from circuits_pl.writable import check_writable_dir

DASHED_SIZES = re.compile(r"^\s*\d+(\s*-\s*\d+)+\s*$")
MEMORY_HEADROOM = 0.9  # refuse runs estimated above 90% of the available memory


class HoldLog(logging.Filter):
    """Hold back the records of one logger until :meth:`release` (replayed, or dropped)."""

    def __init__(self, name: str):
        super().__init__()
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []
        self.logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def release(self, replay: bool) -> None:
        self.logger.removeFilter(self)
        for record in self.records if replay else []:
            self.logger.handle(record)
        self.records = []


def one_line(err: BaseException) -> str:
    """An exception's message as one line (Lightning's span several, with links)."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return text[:400] or type(err).__name__


# ---------------------------------------------------------------------------------------------
# The command line, before jsonargparse
# ---------------------------------------------------------------------------------------------
def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Accept the README's notation ``--model.layer_sizes 2-3-1`` as ``[2, 3, 1]``, and give a logger
    named alone (``--trainer.logger lightning.pytorch.loggers.TensorBoardLogger``) the run's root as
    its save_dir, as Lightning's ``logger=True`` does (jsonargparse would refuse it: save_dir is required)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--model.layer_sizes="):
            name, _, value = arg.partition("=")
            if DASHED_SIZES.match(value):
                out[i] = f"{name}={_as_list(value)}"
        elif arg == "--model.layer_sizes" and i + 1 < len(out) and DASHED_SIZES.match(out[i + 1]):
            out[i + 1] = _as_list(out[i + 1])
    return _logger_save_dir(out)


# Lightning's loggers whose save_dir has no default.
SAVE_DIR_REQUIRED = ("TensorBoardLogger", "CSVLogger", "RunLogger")


def _logger_save_dir(argv: list[str]) -> list[str]:
    values = dict(_option_values(argv))
    logger = values.get("--trainer.logger")
    if not logger or logger.rsplit(".", 1)[-1] not in SAVE_DIR_REQUIRED:
        return argv
    if any(a.startswith(("--trainer.logger.save_dir", "--trainer.logger.init_args.save_dir")) for a in argv):
        return argv
    at = max(i for i, a in enumerate(argv) if a == "--trainer.logger" or a.startswith("--trainer.logger="))
    at += 1 if "=" in argv[at] else 2
    root = values.get("--trainer.default_root_dir") or "."
    return argv[:at] + [f"--trainer.logger.save_dir={root}"] + argv[at:]


def _option_values(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(option, value) of each ``--option value`` or ``--option=value`` in ``argv``."""
    pairs = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            pairs.append(tuple(arg.split("=", 1)))
        elif arg.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.append((arg, argv[i + 1]))
    return pairs


def _as_list(dashed: str) -> str:
    return "[" + ", ".join(part.strip() for part in dashed.split("-")) + "]"


def config_paths(argv: Sequence[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.partition("=")[2])
    return paths


def check_config_files(argv: Sequence[str]) -> None:
    """Each ``--config FILE`` of ``argv``: :func:`check_config_file`."""
    for path in config_paths(argv):
        check_config_file(path)


def check_config_file(path: str) -> None:
    """The config file exists and is a YAML mapping (jsonargparse says "Unexpected config:" to an empty
    file and raises UnicodeDecodeError on a binary one). Syntax errors are left to jsonargparse."""
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise CircuitsError(f"config {path} {what}; give a YAML file, e.g. a run's config.yaml")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise CircuitsError(f"config {path} is not a text file (binary data); give a YAML file of options, "
                            "e.g. a run's config.yaml")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # jsonargparse's own message names the line
    if loaded is None:
        raise CircuitsError(f"config {path} is empty; a config is a YAML mapping of options, e.g. 'task: add' "
                            "(print a full one with: fit --task add --print_config)")
    if not isinstance(loaded, dict):
        raise CircuitsError(f"config {path} holds a {type(loaded).__name__}, not a YAML mapping of options "
                            "such as 'task: add'")


# ---------------------------------------------------------------------------------------------
# The parsed configuration, before instantiation
# ---------------------------------------------------------------------------------------------
SWEEP_AXES = {"sizes": ("layer_sizes", None), "lr": ("lr", 0.1), "init_scale": ("init_scale", 1.0)}


def resolve_sweep(cfg: Namespace, task_name: str, typed: Namespace | None = None) -> Sweep | None:
    """``--sweep.sizes/lr/init_scale`` (a config's ``sweep:``) as the run's cells: every combination,
    an axis not swept taking the model's one value. Several cells go to ``model.cells``; one cell is
    a plain run (``model.layer_sizes``, ``model.lr``, ``model.init_scale``), exactly as if given so.
    The sweep section is emptied (config.yaml then holds the cells once). None when no sweep is given.

    One-line CircuitsError for bad values and for an axis given twice (``--sweep.lr`` with
    ``--model.lr``, ``--sweep.*`` with ``model.cells``). ``typed``: the model options the user gave
    (the CLI's, on the command line or in a config file); None: those that differ from the default.
    """
    section = cfg.get("sweep")
    given = {k: section.get(k) for k in SWEEP_AXES if section is not None and section.get(k) is not None}
    if not given:
        return None
    model = cfg.model
    if model.get("cells") is not None:
        raise CircuitsError(f"--sweep.{' and --sweep.'.join(given)} and model.cells both give the cells: choose one")
    for axis in given:
        key, default = SWEEP_AXES[axis]
        if (typed.get(key) is not None) if typed is not None else model.get(key) != default:
            raise CircuitsError(f"--sweep.{axis} and --model.{key} both give the {key.replace('_', ' ')}: choose one "
                                f"(--sweep.{axis} trains every value listed; --model.{key} one)")
    members = model.get("members")
    if not is_step_count(members):
        raise CircuitsError(f"model.members must be a positive integer, got {members!r}")
    task = get_task(task_name)
    one = task.layer_sizes if model.get("layer_sizes") is None else model.layer_sizes
    sizes = parse_sizes_list(given["sizes"], task.arity) if "sizes" in given else [tuple(task.check_layer_sizes(one))]
    for s in sizes:
        task.check_layer_sizes(list(s))
    lrs = parse_positive_list(given["lr"], "--sweep.lr") if "lr" in given else [model.get("lr")]
    scales = (parse_positive_list(given["init_scale"], "--sweep.init_scale") if "init_scale" in given
              else [model.get("init_scale")])
    sweep = Sweep.product(sizes, lrs, scales, members)
    if sweep.is_single:
        (cell,) = sweep.cells
        if "sizes" in given:
            model.layer_sizes = list(cell.layer_sizes)
        model.lr, model.init_scale = cell.lr, cell.init_scale
    else:
        model.cells = [c.as_dict() for c in sweep.cells]
        for key, default in SWEEP_AXES.values():  # each cell carries them now (the module refuses both)
            model[key] = default
    for axis in SWEEP_AXES:
        section[axis] = None
    return sweep


def total_members(model: Namespace | dict) -> Any:
    """All members of a run: ``model.members`` per cell times its cells (the value as given when it
    is not a positive integer: the module's own check then says so)."""
    members, cells = model.get("members"), model.get("cells")
    if is_step_count(members) and isinstance(cells, (list, tuple)) and cells:
        return members * len(cells)
    return members


def check_run(cfg: Namespace, subcommand: str | None, cadence: Cadence | None) -> None:
    """Every check of a parsed subcommand's options, cheapest first (``cadence``: :func:`run_cadence`'s)."""
    check_seed(cfg.get("seed_everything"))
    check_trainer_values(cfg.trainer, subcommand)
    check_hand_derived_step(cfg.trainer)
    check_devices(cfg.trainer.get("devices"))
    if subcommand == "fit":
        check_run_ends(cfg.trainer, cfg.get("stop"))
    check_checkpoint_cadence(cfg.get("checkpoint"))
    check_accelerator(cfg.trainer.accelerator)
    check_logger_installed(cfg.trainer.logger)
    follow_default_root_dir(cfg.trainer)
    size = run_size(cfg, cadence)  # imports and calls a user task: its targets are checked here
    cells = cfg.model.get("cells") if "model" in cfg else None
    if subcommand == "fit" and size is not None:
        sizes = [tuple(c["layer_sizes"]) for c in cells] if cells else [size.layer_sizes]  # run_size checked them
        check_engine(cfg.model.get("engine"), cfg.trainer.accelerator, sizes)
    check_memory(size, cells=len(cells) if isinstance(cells, (list, tuple)) and cells else 1)
    check_output_dirs(cfg, subcommand, size)


SEED_RANGE = (0, 2**32 - 1)  # what Lightning's seed_everything (numpy's seed) accepts


def check_seed(seed: Any) -> None:
    if isinstance(seed, int) and not isinstance(seed, bool) and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise CircuitsError(f"--seed_everything {seed} is out of range; give an integer from {SEED_RANGE[0]} to "
                            f"{SEED_RANGE[1]}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_trainer_values(trainer: Namespace, subcommand: str | None) -> None:
    max_steps = trainer.get("max_steps")
    if isinstance(max_steps, int) and (max_steps < -1 or (max_steps == 0 and subcommand == "fit")):
        what = "trains nothing" if max_steps == 0 else "is not a step count"
        raise CircuitsError(f"--trainer.max_steps {max_steps} {what}; give a positive number of SGD steps "
                            "(or -1 for no limit, with --stop.when best or all)")
    interval = trainer.get("val_check_interval")
    if _is_number(interval):
        if interval <= 0:
            raise CircuitsError(f"--trainer.val_check_interval {interval} is not positive; give the number of "
                                "SGD steps between validations, e.g. 1000")
        if isinstance(interval, float) and interval > 1 and interval.is_integer():
            raise CircuitsError(f"--trainer.val_check_interval {interval:g} is a float, which Lightning reads as a "
                                "fraction of an epoch (and the training stream never ends one); give a whole number "
                                f"of SGD steps between validations: {int(interval)}")
        if isinstance(interval, float):  # Lightning reads a float as a fraction of an epoch
            raise CircuitsError(f"--trainer.val_check_interval {interval} is a fraction of an epoch, and the "
                                "training stream never ends one; give the number of SGD steps between validations, "
                                "e.g. 1000")
    log_every = trainer.get("log_every_n_steps")
    if isinstance(log_every, int) and not isinstance(log_every, bool) and log_every < 0:
        raise CircuitsError(f"--trainer.log_every_n_steps {log_every} is negative; give a number of SGD steps "
                            "between train/mse rows, e.g. 500 (0: no train logging)")
    for option, stage in (("limit_val_batches", "validation"), ("limit_test_batches", "test")):
        limit = trainer.get(option)
        if _is_number(limit) and not (limit == 1.0 or (isinstance(limit, int) and limit >= 1)):
            raise CircuitsError(
                f"--trainer.{option} {limit}: the {stage} set is one batch of --data.val_size points, and "
                f"{'turning it off' if limit <= 0 else 'a part of it'} would leave {stage} MSE, solved members, "
                "verdicts and checkpoints without their measure; drop it (a smaller --data.val_size makes "
                f"{stage} cheaper)")


def check_hand_derived_step(trainer: Namespace) -> None:
    """Lightning options that act on an autograd step, which circuits_pl does not take (its SGD step is
    hand-derived, many per Lightning batch): Lightning would refuse them after the run directory exists."""
    accumulate = trainer.get("accumulate_grad_batches")
    if _is_number(accumulate) and accumulate != 1:
        raise CircuitsError(f"--trainer.accumulate_grad_batches {accumulate}: circuits_pl takes every SGD step itself, "
                            "one per batch of --data.batch_size points; for a larger batch give --data.batch_size "
                            f"(e.g. {1000 * accumulate if isinstance(accumulate, int) and accumulate > 0 else 4000})")
    clip = trainer.get("gradient_clip_val")
    if _is_number(clip) and clip != 0:
        raise CircuitsError(f"--trainer.gradient_clip_val {clip}: circuits_pl's hand-derived SGD step does not clip "
                            "gradients; drop it (a smaller --model.lr tames large steps)")
    # Each would train silently on other inputs than the endless stream's (measured: other weights).
    limit = trainer.get("limit_train_batches")
    if _is_number(limit) and limit != 1.0:
        raise CircuitsError(f"--trainer.limit_train_batches {limit}: the training stream is endless and every step "
                            "draws fresh inputs, so there are no batches to leave out; to train fewer steps give "
                            "--trainer.max_steps")
    overfit = trainer.get("overfit_batches")
    if _is_number(overfit) and overfit != 0:
        raise CircuitsError(f"--trainer.overfit_batches {overfit}: circuits_pl trains on fresh inputs at every step "
                            "(a fixed set would be a different experiment); drop it")
    if trainer.get("barebones") is True:
        raise CircuitsError("--trainer.barebones true turns off the logging and the checkpoints that circuits_pl's "
                            "results come from (metrics, last.ckpt, results.json); drop it")


def check_devices(devices: Any) -> None:
    """``--trainer.devices``: auto, a positive count, -1 (all), or a list of device indices."""
    if devices is None or devices == "auto" or devices == -1 or devices == "-1":
        return
    if isinstance(devices, str):
        text = devices.strip()
        items = [t.strip() for t in text.strip("[]").split(",") if t.strip()] if "," in text or "[" in text else None
        if items is not None and items and all(t.isdigit() for t in items):
            return
        if text.isdigit() and int(text) > 0:
            return
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return
    elif isinstance(devices, (list, tuple)) and devices and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices):
        return
    raise CircuitsError(f"--trainer.devices {devices} is not a number of devices; give a positive integer (processes "
                        "on this machine with --trainer.strategy ddp, or GPUs), -1 for all, or auto")


def check_run_ends(trainer: Namespace, stop: Namespace | None) -> None:
    """A fit with no step limit must have something else to end it."""
    when = stop.get("when") if stop else None
    if trainer.get("max_steps") == -1 and when == "never" and not trainer.get("max_time"):
        raise CircuitsError("--trainer.max_steps -1 with --stop.when never would train forever; give a number of "
                            "SGD steps, or --stop.when best or all, or a --trainer.max_time (e.g. 00:01:00:00)")


def check_checkpoint_cadence(checkpoint: Namespace | None) -> None:
    """Checkpoints are written at validations (the best by val/mse and last.ckpt). Lightning's
    train-time triggers would save between validations with the last validation's val/mse and its
    step in the name (a stale best-step=N), so they are refused rather than half-working."""
    if not checkpoint:
        return
    every = checkpoint.get("every_n_train_steps")
    if isinstance(every, int) and every > 0:  # a negative value gets Lightning's own one-line refusal
        raise CircuitsError(f"--checkpoint.every_n_train_steps {every}: circuits_pl writes checkpoints at every "
                            f"validation; to save every {every} SGD steps give --trainer.val_check_interval {every}")
    if checkpoint.get("train_time_interval"):
        raise CircuitsError("--checkpoint.train_time_interval: circuits_pl writes checkpoints at every validation; "
                            "validate more often with --trainer.val_check_interval (SGD steps)")


def check_accelerator(accelerator: Any) -> None:
    name = accelerator if isinstance(accelerator, str) else None
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise CircuitsError(f"--trainer.accelerator {name}: this machine has no CUDA GPU that torch can use; "
                            "give --trainer.accelerator cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CircuitsError("--trainer.accelerator mps: Apple's MPS is not available here; "
                            "give --trainer.accelerator cpu (or auto)")
    if name == "tpu" and importlib.util.find_spec("torch_xla") is None:
        raise CircuitsError("--trainer.accelerator tpu needs torch_xla, which is not installed; "
                            "give --trainer.accelerator cpu (or auto)")


def check_engine(engine: Any, accelerator: Any, layer_sizes: Sequence[Sequence[int]]) -> None:
    """``--model.engine fused`` where it cannot train (a GPU, numba missing, a cell's ``layer_sizes`` it has
    no kernel for): one line naming the alternative."""
    if not isinstance(accelerator, str):
        return  # an accelerator object: the module's setup checks the device it gives
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    device = "cuda" if gpu else "cpu" if accelerator in ("cpu", "auto") else accelerator
    for sizes in layer_sizes:
        problem = engine_problem(engine, device, sizes)
        if problem:
            raise CircuitsError(problem)


# Lightning's loggers and the package each needs (the first one found is enough).
LOGGER_PACKAGES = {
    "TensorBoardLogger": ("tensorboard", "tensorboardX"),
    "WandbLogger": ("wandb",),
    "MLFlowLogger": ("mlflow",),
    "CometLogger": ("comet_ml",),
    "NeptuneLogger": ("neptune",),
}


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def check_logger_installed(logger: Any) -> None:
    """A Lightning logger whose package is missing: one line (Lightning's is a 96-line traceback)."""
    for item in logger if isinstance(logger, list) else [logger]:
        class_path = item.get("class_path") if isinstance(item, (Namespace, dict)) else None
        if not isinstance(class_path, str):
            continue
        packages = LOGGER_PACKAGES.get(class_path.rsplit(".", 1)[-1])
        if packages and not any(module_available(p) for p in packages):
            raise CircuitsError(f"{class_path.rsplit('.', 1)[-1]} needs the {packages[0]} package, which is not "
                                f"installed: pip install {packages[0]} (or drop --trainer.logger)")


def follow_default_root_dir(trainer: Namespace) -> None:
    """``--trainer.default_root_dir`` moves the run logger too: with ``--config RUN/config.yaml``, the
    logger's save_dir stored there would otherwise win over the command line."""
    logger, root = trainer.get("logger"), trainer.get("default_root_dir")
    if root is None or not isinstance(logger, Namespace) or logger.get("class_path") != "circuits_pl.logger.RunLogger":
        return
    if logger.get("init_args") is None:
        logger.init_args = Namespace()
    logger.init_args.save_dir = root


def run_cadence(cfg: Namespace) -> Cadence | None:
    """The run's cadence in SGD steps and Lightning batches (:class:`circuits_pl.cadence.Cadence`):
    data.steps_per_batch as given (checked to divide trainer.val_check_interval), or chosen for this
    config's intervals, members, batch size and strategy. None without a data section, or when
    data.steps_per_batch is not a positive integer (the data module's own check then says so)."""
    if "data" not in cfg or "trainer" not in cfg:
        return None
    trainer, model, data = cfg.trainer, cfg.get("model") or {}, cfg.data
    given = data.get("steps_per_batch")
    if given is not None and not is_step_count(given):
        return None
    val_every, log_every, max_steps = (trainer.get(k) for k in ("val_check_interval", "log_every_n_steps", "max_steps"))
    log_every = log_every if isinstance(log_every, int) and not isinstance(log_every, bool) else None  # 0: off
    return Cadence.choose(val_every if is_step_count(val_every) else None, log_every, total_members(model),
                          data.get("batch_size"), is_member_parallel(trainer.get("strategy")), given,
                          max_steps if isinstance(max_steps, int) else -1, option="trainer.val_check_interval")


def run_size(cfg: Namespace, cadence: Cadence | None) -> RunSize | None:
    """The sizes deciding a run's memory, with the task's default layer sizes filled in and the block of
    the run's ``cadence``; None if a size is not a positive integer (the module's or data module's own
    check then says so)."""
    if cfg.get("task") is None:
        return None
    task = get_task(cfg.task)
    model, data = cfg.model, cfg.data
    sizes = model.get("layer_sizes")
    sizes = task.check_layer_sizes(task.layer_sizes if sizes is None else sizes)
    if model.get("cells"):  # a sweep: counted as if every member had the largest cell's sizes
        try:
            sizes = max((Cell(tuple(c["layer_sizes"]), c["lr"]).layer_sizes for c in model.cells),
                        key=parameters_per_member)
        except (CircuitsError, KeyError, TypeError):
            return None  # the module's own check says what is wrong with the cells
    steps = cadence.steps_per_batch if cadence is not None else None
    values = [total_members(model), data.get("batch_size"), steps, data.get("val_size"),
              data.get("predict_points")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None
    return RunSize(tuple(sizes), *values, bias=bool(model.get("bias")))


FIT_OPTIONS = {"members": "--model.members", "batch_size": "--data.batch_size"}


def check_memory(size: RunSize | None, available: int | None = None, options: dict[str, str] = FIT_OPTIONS,
                 cells: int = 1) -> None:
    """Refuse a run whose estimated memory exceeds what is available, naming the largest value that fits
    (``options``: the command's option for each size it lets the user set; members are per cell of
    a sweep of ``cells`` cells)."""
    if size is None:
        return
    available = available_bytes() if available is None else available
    if available is None:
        return
    need = estimate(size)["total"]
    budget = int(available * MEMORY_HEADROOM)
    if need <= budget:
        return
    hints = []
    for field, option in options.items():
        best = largest_fitting(size, field, budget) // (cells if field == "members" else 1)
        if best >= 1:
            hints.append(f"{option} {best:,}")
    if len(size.layer_sizes) > 2:
        width = largest_fitting(size, "width", budget)
        if 1 <= width < max(size.layer_sizes[1:-1]):
            hints.append(f"hidden width {width:,}")
    fix = ("largest that fit, the rest unchanged: " + ", ".join(hints)) if hints else "no size fits"
    sizes = "-".join(map(str, size.layer_sizes))
    raise CircuitsError(
        f"this run needs about {gib(need)} of memory ({size.members:,} members of {sizes}, batch {size.batch_size:,}) "
        f"but {gib(available)} is available; {fix}"
    )


def check_output_dirs(cfg: Namespace, subcommand: str | None, size: RunSize | None) -> None:
    """The run directory's parent and ``--checkpoint.dirpath`` are directories we can write, with room."""
    trainer = cfg.trainer
    logger = trainer.get("logger")
    needed = 3 * checkpoint_bytes(size) + 2**20 if size is not None and subcommand == "fit" else 2**16
    root, option = trainer.get("default_root_dir"), "--trainer.default_root_dir"
    save_dir = logger.init_args.get("save_dir") if isinstance(logger, Namespace) and logger.get("init_args") else None
    if save_dir and logger.get("class_path") != "circuits_pl.logger.RunLogger":  # ours follows default_root_dir
        root, option = save_dir, "--trainer.logger.init_args.save_dir"
    root = "." if root is None else root
    check_writable_dir(root, option, needed)
    name = logger.init_args.get("name") if isinstance(logger, Namespace) and logger.get("init_args") else None
    if isinstance(name, str) and name:
        check_writable_dir(os.path.join(root, name), option, 0)
    dirpath = cfg.get("checkpoint", Namespace()).get("dirpath") if cfg.get("checkpoint") else None
    if dirpath and subcommand == "fit":
        check_writable_dir(dirpath, "--checkpoint.dirpath", needed)

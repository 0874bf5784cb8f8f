"""Reading checkpoints safely: every byte checked against the zip's CRC-32, ``weights_only=True`` (no
pickled code runs), the structure checked, and one clear line for each way a file can be wrong."""

from __future__ import annotations

import mmap
import struct
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from circuits_pl.errors import CircuitsError
from circuits_pl.network import upgrade_group_keys
from circuits_pl.population import upgrade_state_dict
from circuits_pl.sweep import Sweep
from circuits_pl.tasks import Task, is_builtin


def damaged_record(f: IO[bytes]) -> str | None:
    """The name of the first record of the zip archive ``f`` (an open checkpoint) whose bytes do not
    match their CRC-32, or None if all do. Raises ``zipfile.BadZipFile`` if ``f`` is no zip archive.

    ``torch.save`` writes a CRC-32 for every record, but torch's reader does not check them (its miniz
    is built without the check): a flipped bit inside a tensor loads silently (a weight of 0.85
    became 2.9e38). The CRCs are checked here with zlib over a read-only memory map of the same open
    file that is then loaded: no copy, one pass over bytes the load reads anyway, and the bytes
    checked are the bytes loaded (``benchmarks/fault_injection.py --mode costs`` measures it against
    the load). A record stored with CRC 0 (``torch.serialization.set_crc32_options(False)``) has none
    to check.
    """
    with zipfile.ZipFile(f) as archive:
        records = archive.infolist()
    if not records:
        return None
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            for info in records:
                if info.CRC == 0 and info.file_size:
                    continue  # written without CRCs
                if info.compress_type != zipfile.ZIP_STORED:  # torch stores; anything else, zipfile checks
                    with zipfile.ZipFile(f) as archive, archive.open(info) as record:
                        try:
                            while record.read(1 << 24):
                                pass
                        except zipfile.BadZipFile:
                            return info.filename
                    continue
                start = info.header_offset
                name_len, extra_len = struct.unpack("<HH", view[start + 26 : start + 30])
                data = start + 30 + name_len + extra_len
                end = data + info.compress_size
                if end > len(view) or zlib.crc32(view[data:end]) != info.CRC:
                    return info.filename
        finally:
            view.release()
    return None


def load_verified(f: IO[bytes], path: str | Path, **load_kwargs: Any) -> Any:
    """``torch.load`` of the open checkpoint ``f`` once :func:`damaged_record` found every CRC intact;
    CircuitsError (one line naming ``path``) if it is not a zip archive, a record is damaged, or the
    load fails (a pickle with code in it under ``weights_only=True``). torch's warnings are held back:
    the one line says it all."""
    try:
        bad = damaged_record(f)
    except (zipfile.BadZipFile, ValueError):  # ValueError: mmap of an empty file
        empty = Path(path).is_file() and Path(path).stat().st_size == 0
        kind = "an empty file" if empty else "not a zip archive, as every .ckpt file is"
        raise CircuitsError(f"{path} is not a readable checkpoint: {kind} (truncated, or another kind of "
                            "file)") from None
    if bad is not None:
        raise CircuitsError(f"checkpoint {path} is damaged: its record {bad} fails its CRC-32 check (bytes changed on "
                            "disk or in a copy); use another checkpoint of the run, e.g. its best-step=N.ckpt")
    f.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(f, **load_kwargs)
    except Exception as err:  # a pickle with code in it, a record missing, ...
        raise CircuitsError(f"{path} is not a readable checkpoint (truncated, or not a .ckpt file{_reason(err)})") \
            from None


def _reason(err: BaseException) -> str:
    reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:120]
    return f": {reason}" if len(reason) > 8 else ""


def load_checked_checkpoint(path: str | Path, task: str | Task | None = None, option: str = "--task") -> dict[str, Any]:
    """Load a circuits_pl checkpoint on the CPU with ``weights_only=True``, or raise CircuitsError.

    Checks that the file exists, that every byte matches the zip's CRC-32, that it holds circuits_pl
    hyper-parameters of the right types and a state_dict of tensors, and that its weights have the
    shapes those hyper-parameters promise; then :func:`check_task`. (:func:`check_state_dict` compares
    every buffer with a module built from these hyper-parameters.)
    """
    p = Path(path)
    if not p.exists():
        raise CircuitsError(f"checkpoint {path} does not exist; give a .ckpt file, e.g. <run>/checkpoints/last.ckpt")
    if p.is_dir():
        # the run's last.ckpt if the directory is a run's checkpoints/, a run, or a root of runs
        found = [c for c in (p / "last.ckpt", p / "checkpoints" / "last.ckpt") if c.is_file()] or \
            sorted(p.glob("lightning_logs/version_*/checkpoints/last.ckpt"), key=lambda c: c.stat().st_mtime)[-1:]
        example = found[0] if found else p / "checkpoints" / "last.ckpt"
        raise CircuitsError(f"{path} is a directory; give a checkpoint file, e.g. {example}")
    try:
        with open(p, "rb") as f:
            ckpt = load_verified(f, path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CircuitsError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not {"task", "layer_sizes", "members"} <= hp.keys() or "state_dict" not in ckpt:
        raise CircuitsError(f"{path} is a checkpoint, but not of circuits_pl (no task/layer_sizes/members in it)")
    sizes, members, state = hp["layer_sizes"], hp["members"], ckpt["state_dict"]
    if not isinstance(hp["task"], str):
        raise CircuitsError(f"{path} is damaged: its task is {hp['task']!r}, not a task name")
    sized = isinstance(sizes, (list, tuple)) and len(sizes) >= 2 and all(_positive_int(s) for s in sizes)
    if not sized and not (sizes is None and hp.get("cells")):  # a study's cells differ in sizes: None
        raise CircuitsError(f"{path} is damaged: its layer_sizes are {sizes!r}, not a list of positive integers")
    if not _positive_int(members):
        raise CircuitsError(f"{path} is damaged: its members is {members!r}, not a positive integer")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CircuitsError(f"{path} is damaged: its state_dict is not a mapping of names to tensors")
    for g, group in enumerate(saved_sweep(path, hp).groups()):
        sizes = list(group.layer_sizes)
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            # a checkpoint from before the networks came in groups holds group 0 as net.weights.l
            w = state.get(f"net.groups.{g}.weights.{layer}", state.get(f"net.weights.{layer}") if g == 0 else None)
            if w is None or tuple(w.shape) != (group.members, n_out, n_in):
                raise CircuitsError(f"{path} is damaged: layer {layer} weights do not match layer sizes {sizes}")
    check_task(path, hp["task"], task, option)
    hp.setdefault("engine", "torch")  # saved before --model.engine existed: the torch engine trained it
    return ckpt


def saved_sweep(path: str | Path, hp: dict[str, Any]) -> Sweep:
    """The cells a checkpoint's hyper-parameters describe (a checkpoint from before sweeps: one cell)."""
    try:
        return Sweep.of_run(hp["layer_sizes"] or (), hp.get("lr", 0.1), hp.get("init_scale", 1.0), hp.get("cells"),
                            int(hp["members"]))
    except (CircuitsError, TypeError, ValueError, KeyError) as err:
        raise CircuitsError(f"{path} is damaged: its cells or layer sizes are not valid ({err})") from None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_state_dict(path: str | Path, saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Every buffer and weight a module built from the checkpoint's hyper-parameters has (``expected``),
    with its shape, and nothing else: one line naming the first difference (Lightning's own is a
    multi-line traceback, raised after the run directory exists). A checkpoint of the previous layout
    is compared as the module will load it (``population.upgrade_state_dict``, ``network.upgrade_group_keys``)."""
    saved = dict(saved)
    upgrade_state_dict(saved)
    upgrade_group_keys(saved)
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if missing or extra:
        what = f"lacks {', '.join(missing[:3])}" if missing else f"has unknown entries {', '.join(extra[:3])}"
        raise CircuitsError(f"{path} is damaged: its state_dict {what} (a checkpoint of another version of "
                            "circuits_pl, or edited)")
    for key, want in expected.items():
        if tuple(saved[key].shape) != tuple(want.shape):
            raise CircuitsError(f"{path} is damaged: {key} has shape {tuple(saved[key].shape)}, not "
                                f"{tuple(want.shape)} as its hyper-parameters say")


def non_finite_members(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per member, True where any weight (or bias) is NaN or infinite: ``(K,)`` (groups of a study's cells
    in order, each its own members)."""
    state = dict(state)
    upgrade_group_keys(state)
    groups: dict[int, list[torch.Tensor]] = {}
    for key, t in state.items():
        parts = key.split(".")  # net.groups.G.weights.L
        if key.startswith("net.groups.") and parts[3] in ("weights", "biases"):
            groups.setdefault(int(parts[2]), []).append(t)
    finite = [torch.stack([torch.isfinite(t).flatten(1).all(1) for t in groups[g]]).all(0) for g in sorted(groups)]
    return ~torch.cat(finite)


def check_finite(path: str | Path, state: Mapping[str, torch.Tensor], member: int | None, command: str) -> None:
    """Refuse a checkpoint whose ``member`` (None: every member) has non-finite weights, as ``inspect`` does:
    there is nothing to validate, test, predict or train on from there."""
    bad = non_finite_members(state)
    good = (~bad).nonzero().flatten().tolist()
    if member is None:
        if good:
            return
        raise CircuitsError(f"{path}: every member has non-finite (NaN/inf) weights, so there is nothing to {command} "
                            "(a damaged or diverged checkpoint); use an earlier checkpoint, or retrain with a smaller "
                            "--model.lr")
    if not bool(bad[member]):
        return
    listed = ", ".join(map(str, good[:10])) + (f", ... ({len(good)} in all)" if len(good) > 10 else "")
    others = f"members with finite weights: {listed} (pick one with --model.member)" if good else \
        "no member has finite weights: use an earlier checkpoint, or retrain with a smaller --model.lr"
    raise CircuitsError(f"{path}: member {member} has non-finite (NaN/inf) weights, so nothing to {command}; {others}")


def check_task(path: str | Path, saved: str, given: str | Task | None, option: str = "--task") -> None:
    """Refuse to import code a checkpoint names: its task loads only if built in or named by the
    user (``given``), and a named task must be the checkpoint's.

    ``weights_only=True`` keeps pickled code out; without this check the saved task string
    ``package.module:function`` would still be imported, so reading a checkpoint would run any module it
    names (``this:s`` prints the Zen of Python). Raises CircuitsError saying which option to pass.
    """
    fix = f"task={saved!r}" if option == "task=" else f"{option} {saved}"
    if given is None:
        if not isinstance(saved, str) or not is_builtin(saved):
            raise CircuitsError(
                f"checkpoint {path} is of your own task {saved!r}; a checkpoint never imports code by itself: "
                f"give {fix} if you trust that module"
            )
        return
    if not isinstance(given, Task) and given != saved:  # a Task object passed from Python is the user's choice
        raise CircuitsError(f"checkpoint {path} is of task {saved!r}, not {given!r}: give {fix}")

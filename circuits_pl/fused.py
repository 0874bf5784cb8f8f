"""The fused CPU engine: a whole block of S SGD steps for a range of members in one compiled loop (numba).

Per member and step, one pass over the batch computes the forward pass, the error and every gradient
sum, then the update rule is applied; the torch engine (``network.step_gradients`` and ``optim``) runs
about a dozen tensor ops per step instead, each paying dispatch at these sizes. Same maths
(hand-derived gradients of each member's MSE, torch.optim's sgd/momentum/adam), float32 throughout::

    for each step s of the block:             its inputs made batch-last (in, B) once, in L1 for every member
        for each member k in [lo, hi):
            for each sample b (vectorised):   hidden units, output, error, gradient sums (registers)
            update rule on member k's weights and state, in place

Kernels are specialised per run: layer sizes, bias and rule are free variables of the compiled
closure, which numba treats as compile-time constants, so every loop over units is unrolled, the sums
and activations live in registers (``_stack_floats``) and the loop over the batch is vectorised. Only
the specialisation a run needs is compiled, on first use; numba's on-disk cache (``cache=True``, keyed by
the closure's constants too) keeps it for later runs. A package directory that is not writable is
handled by numba: its cache falls back to the user's cache directory, or to ``NUMBA_CACHE_DIR`` if set;
with no writable place at all the kernel is compiled without a cache.

Member k's arithmetic depends only on its weights and state, the step's batch and these constants:
members run one after another through the same code, each sum over the batch in one order fixed by B.
So member k is bit-identical whatever K, the member range (a DDP rank's share) or the thread running it.
It equals the torch engine to float32 rounding, not bit for bit: sums are reassociated to vectorise them.

numba is imported on first use only: ``import circuits_pl`` (and the torch engine) never pays for it.
This module does not import torch either: it reads tensors through ``Tensor.numpy()``, which shares
their memory on the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np  # torch imports it anyway; the kernels use its float32 scalars

# "gradients" is no rule: it stores each member's gradient in its (one) state slot and leaves the
# weights alone, so that tests compare the kernels' gradients themselves with the torch engine's.
RULE_CODES = {"sgd": 0, "momentum": 1, "adam": 2, "gradients": 3}
STATE_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2, "gradients": 1}
HIDDEN_LAYERS = (1, 2)  # kernels written for one and two hidden layers (any widths), one output

# LLVM fast-math flags of the kernels. "reassoc" lets the sums over the batch be vectorised (a strict
# left-to-right float sum cannot be), "nsz" ignores the sign of zero. Not "contract" (fused multiply-adds):
# with it, numba's in-process JIT and the object code it writes to its cache fused different pairs, so
# a process that compiled a kernel and one that loaded it from the cache (a DDP rank, a resumed run)
# trained the same member to different bits (tests/test_fused.py). Not numba's fastmath=True either:
# that also assumes no inf/NaN ("nnan", "ninf"), and a diverging member must keep its non-finite values
# so that the module finds it, as under the torch engine.
FASTMATH = frozenset({"reassoc", "nsz"})


@dataclass(frozen=True)
class Spec:
    """What a compiled kernel is specialised on."""

    layer_sizes: tuple[int, ...]
    bias: bool
    rule: str

    @property
    def key(self) -> str:
        return f"{'-'.join(map(str, self.layer_sizes))}_{'bias' if self.bias else 'nobias'}_{self.rule}"


def unsupported(layer_sizes: Sequence[int]) -> str | None:
    """Why the fused kernels cannot train this architecture (None if they can)."""
    hidden = len(layer_sizes) - 2
    if hidden not in HIDDEN_LAYERS:
        return f"it has kernels for 1 or 2 hidden layers, and layer_sizes {list(layer_sizes)} has {hidden}"
    if layer_sizes[-1] != 1:
        return f"it has kernels for one output, and layer_sizes {list(layer_sizes)} ends with {layer_sizes[-1]}"
    return None


# Two hidden layers of H1 and H2 units: the kernel unrolls the H1 x H2 products of every sample, which
# LLVM stops keeping in registers somewhere above 8 x 8 (measured, K = 128: at 2-16-16-1 the torch
# engine wins; with one hidden layer the fused kernel stays ahead up to 64 units).
MAX_FUSED_PRODUCTS = 64


def slower_than_torch(layer_sizes: Sequence[int]) -> bool:
    """Would the torch engine train this (supported) network faster? ``auto`` then picks torch."""
    hidden = list(layer_sizes[1:-1])
    return len(hidden) == 2 and hidden[0] * hidden[1] > MAX_FUSED_PRODUCTS


@cache
def import_error() -> str | None:
    """None if numba imports here, else why not (one line)."""
    try:
        import numba  # noqa: F401
    except Exception as err:  # ImportError, or numba refusing this numpy version at import
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


def available() -> bool:
    return import_error() is None


# ------------------------------------------------------------------------------------------------
# Running a block
# ------------------------------------------------------------------------------------------------
def train_members(params: Sequence[Any], states: Sequence[Sequence[Any]], n_weights: int, rule: str,
                  hyper: dict[str, Any], xt: Any, yt: Any, first_step: int, members: slice,
                  threads: int = 1) -> None:
    """``xt.shape[0]`` steps of the members in ``members``, in place, with updates numbered from
    ``first_step`` (1-based, as torch.optim counts).

    Args:
        params: float32 CPU tensors, member dimension first: all weights ``(K, out, in)``, then all
            biases ``(K, out, 1)`` (as ``MemberOptimizer.params``).
        states: per parameter, the rule's state tensors (``MemberOptimizer.state_tensors()``).
        n_weights: how many of ``params`` are weights.
        rule, hyper: the update rule and torch.optim's hyper-parameters (lr, weight_decay, momentum,
            dampening, nesterov, betas, eps).
        xt: inputs ``(S, in, B)``; yt: targets ``(S, 1, B)`` (as the torch engine takes them). The kernels
            read the inputs sample-major, as the stream draws them: ``xt`` is best the transposed view
            of an ``(S, B, in)`` block (anything else is copied into that layout).
        members: the members to train (a slice of K with step 1); the others do not move.
        threads: split the members over this many threads (the kernels release the GIL).
    """
    if xt.shape[0] == 0:
        return  # a block of no steps (a stop that falls on a block's first step)
    sizes = tuple([params[0].shape[2]] + [w.shape[1] for w in params[:n_weights]])
    spec = Spec(sizes, len(params) > n_weights, rule)
    kernel = compiled(spec)
    k_all = params[0].shape[0]
    flat = [_array(p.reshape(k_all, -1)) for p in params]
    if not spec.bias:  # the kernels take a bias slot per layer: empty ones
        flat += [_empty(k_all) for _ in range(n_weights)]
    n_state = STATE_SLOTS[rule]
    state_arrays = []
    for slot in range(2):  # (first state of every parameter), (second state of every parameter)
        for i in range(len(flat)):
            has = i < len(params) and slot < n_state
            state_arrays.append(_array(states[i][slot].reshape(k_all, -1)) if has else _empty(k_all))
    steps = xt.shape[0]
    xs = _array(xt.transpose(1, 2).contiguous().reshape(steps, -1))  # (S, B * in): no copy if sample-major
    ys = _array(yt.reshape(steps, yt.shape[-1]).contiguous())
    beta1, beta2 = hyper["betas"]
    args = (tuple(flat), tuple(state_arrays), xs, ys, int(first_step), float(hyper["lr"]),
            float(hyper["weight_decay"]), float(hyper["momentum"]), float(hyper["dampening"]),
            bool(hyper["nesterov"]), float(beta1), float(beta2), float(hyper["eps"]))
    lo, hi, step = members.indices(k_all)
    if step != 1:
        raise ValueError(f"members must be a contiguous slice, got {members}")
    _run_split(kernel, args, lo, hi, threads)


def _array(t: Any) -> Any:
    """A tensor's memory as a numpy array (no copy: the kernels update the tensor in place)."""
    if t.device.type != "cpu" or str(t.dtype) != "torch.float32" or not t.is_contiguous():
        raise ValueError(f"the fused engine takes contiguous float32 CPU tensors, got {t.dtype} on {t.device}")
    return t.detach().numpy()


def _empty(members: int) -> Any:
    return np.empty((members, 0), np.float32)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _run_split(kernel: Callable, args: tuple, lo: int, hi: int, threads: int) -> None:
    """Members [lo, hi) in ``threads`` contiguous shares at once (one share: in this thread). Shares
    change nothing in member k's arithmetic (see the module docstring)."""
    threads = max(1, min(int(threads), hi - lo))
    if threads == 1:
        kernel(*args, lo, hi)
        return
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="circuits_pl-fused")
        pool = _pool
    bounds = [lo + (hi - lo) * t // threads for t in range(threads + 1)]
    futures = [pool.submit(kernel, *args, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    for f in futures:
        f.result()


# ------------------------------------------------------------------------------------------------
# Compiling
# ------------------------------------------------------------------------------------------------
@cache
def compiled(spec: Spec) -> Callable:
    """The numba kernel of ``spec``, compiled (or loaded from numba's cache) before it is returned.

    If :func:`warm_up_for` started a process compiling this kernel, it is waited for first: its
    result is then in numba's cache and only loaded here.
    """
    reason = unsupported(spec.layer_sizes)
    if reason is not None:
        raise ValueError(f"the fused engine cannot train this network: {reason}")
    warming = _warming.pop(spec, None)
    if warming is not None:
        try:
            warming.wait(timeout=600)
        except subprocess.TimeoutExpired:
            warming.kill()
    _load_numba()
    hidden = len(spec.layer_sizes) - 2
    if hidden == 2:
        make = _two_hidden
    else:
        make = _one_hidden if spec.layer_sizes[1] <= WIDE else _one_hidden_wide
    kernel = _jit(make(*spec.layer_sizes[:-1], spec.bias, RULE_CODES[spec.rule]))
    _compile_now(kernel, spec)
    _uniform_kernel()  # the stream's draws of a fused run (fill_uniform)
    _mark_warm(spec)
    return kernel


# ------------------------------------------------------------------------------------------------
# The training stream's draws
# ------------------------------------------------------------------------------------------------
def fill_uniform(out: Any, seed: int) -> Any:
    """Fill ``out`` (a contiguous float32 CPU tensor) in place with U[-1, 1) exactly as
    ``stream.fill_uniform`` does with torch's CPU generator seeded with ``seed``, bit for bit.

    torch's generator is a standard mt19937 (seeded with the low 32 bits of the seed), and a float32
    ``uniform_(-1, 1)`` takes one 32-bit output r per value: ``(r & 0xFFFFFF) * 2^-24 * 2 - 1``, exact
    in float32 (see ``circuits_pl.init_weights``). torch generates them one at a time;
    this loop twists and tempers the whole state vectorised, for the fused engine's runs, whose step is
    by then cheaper than their data.
    """
    _uniform_kernel()(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), _array(out.reshape(-1)))
    return out


@cache
def _uniform_kernel() -> Callable:
    kernel = _jit(_mt19937_uniform_py)
    kernel(np.uint64(0), np.empty(0, np.float32))  # compile (or load) now
    return kernel


def _mt19937_uniform_py(seed, out):
    """mt19937 (as C++'s std::mt19937 and torch's ``at::mt19937``) from ``seed``'s low 32 bits; each output r
    becomes the float32 ``(r & 0xFFFFFF) * 2^-23 - 1``."""
    n_state, shift = 624, 397
    upper, lower, matrix = np.uint32(0x80000000), np.uint32(0x7FFFFFFF), np.uint32(0x9908B0DF)
    s = np.empty(n_state, np.uint32)
    s[0] = np.uint32(seed & np.uint64(0xFFFFFFFF))
    for j in range(1, n_state):
        s[j] = np.uint32(1812433253) * (s[j - 1] ^ (s[j - 1] >> np.uint32(30))) + np.uint32(j)
    done, n = 0, out.shape[0]
    scale, one = np.float32(2.0**-23), np.float32(1.0)
    while done < n:
        # the twist: word i from words i, i + 1 and i + 397 (mod 624), the latter already new from i = 227 on;
        # two loops without a branch, so that each is vectorised
        for i in range(n_state - shift):
            y = (s[i] & upper) | (s[i + 1] & lower)
            s[i] = s[i + shift] ^ (y >> np.uint32(1)) ^ ((y & np.uint32(1)) * matrix)
        for i in range(n_state - shift, n_state - 1):
            y = (s[i] & upper) | (s[i + 1] & lower)
            s[i] = s[i + shift - n_state] ^ (y >> np.uint32(1)) ^ ((y & np.uint32(1)) * matrix)
        y = (s[n_state - 1] & upper) | (s[0] & lower)
        s[n_state - 1] = s[shift - 1] ^ (y >> np.uint32(1)) ^ ((y & np.uint32(1)) * matrix)
        m = min(n_state, n - done)
        for i in range(m):  # tempering, then torch's float32 uniform_real on [-1, 1)
            y = s[i]
            y ^= y >> np.uint32(11)
            y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
            y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
            y ^= y >> np.uint32(18)
            out[done + i] = np.float32(np.int32(y & np.uint32(0xFFFFFF))) * scale - one
        done += m


def _compile_now(kernel: Callable, spec: Spec) -> None:
    """Compile (or load) ``kernel`` for the argument types every call passes, with a block of no steps."""
    n_params = 2 * (len(spec.layer_sizes) - 1)
    empty = np.empty((1, 0), np.float32)
    xs, ys = np.empty((0, spec.layer_sizes[0]), np.float32), np.empty((0, 1), np.float32)  # 0 steps of batch 1
    kernel(tuple([empty] * n_params), tuple([empty] * 2 * n_params), xs, ys, 1, 0.1, 0.0, 0.0, 0.0, False, 0.9,
           0.999, 1e-8, 0, 1)


# ------------------------------------------------------------------------------------------------
# The first run after an install: compiling while torch and Lightning import
# ------------------------------------------------------------------------------------------------
_warming: dict[Spec, subprocess.Popen] = {}


def warm_up_for(argv: Sequence[str]) -> None:
    """Start compiling the kernel that ``fit`` with these command-line arguments will need, in a
    background process, unless it was compiled before (``python -m circuits_pl`` calls this first).

    A fresh install has no compiled kernel, and compiling one takes about as long as the training of
    a default ``fit`` saves; importing torch and Lightning takes longer still and uses one core, so the
    compile runs beside it and :func:`compiled` only loads the result from numba's cache. Only what
    the command line says is predicted (task, layer sizes, bias, optimizer); a run configured
    otherwise (``--config``, ``--ckpt_path``) compiles when it first trains, as without this.
    """
    spec = spec_from_argv(argv)
    if spec is None or _is_marked_warm(spec) or os.environ.get("LOCAL_RANK") not in (None, "0"):
        return
    code = (f"from circuits_pl.fused import Spec, compiled; "
            f"compiled(Spec({spec.layer_sizes!r}, {spec.bias!r}, {spec.rule!r}))")
    try:
        _warming[spec] = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        pass  # no process to spare: the kernel compiles when the run first trains


def spec_from_argv(argv: Sequence[str]) -> Spec | None:
    """The kernel a ``fit`` command line will need, or None if the command line alone does not say."""
    from circuits_pl.usage import BUILTIN_TASKS

    args = list(argv)
    if not args or args[0] != "fit" or any(a.startswith(("--config", "--ckpt_path")) for a in args):
        return None
    options: dict[str, str] = {}
    for i, arg in enumerate(args[1:], 1):
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            options[key] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    if options.get("--model.engine", "auto") not in ("auto", "fused"):
        return None
    if options.get("--trainer.accelerator", "auto") not in ("auto", "cpu"):
        return None
    defaults = {name: sizes for name, _, sizes in BUILTIN_TASKS}
    sizes_text = options.get("--model.layer_sizes") or defaults.get(options.get("--task", ""))
    try:
        sizes = tuple(int(s) for s in sizes_text.strip("[]() ").replace(",", "-").replace(" ", "").split("-"))
    except (AttributeError, ValueError):
        return None
    bias = options.get("--model.bias", "false").lower() in ("true", "1", "yes")
    rule = options.get("--model.optimizer", "sgd")
    if rule not in ("sgd", "momentum", "adam") or unsupported(sizes) or min(sizes) < 1:
        return None
    if options.get("--model.engine", "auto") == "auto" and slower_than_torch(sizes):
        return None  # auto trains it with torch
    return Spec(sizes, bias, rule)


def _marker(spec: Spec) -> Path | None:
    """A file saying that this spec's kernel is in numba's cache (so no warm-up is needed): beside the
    cache numba writes first, named by the spec, this file's source, numba's and Python's version."""
    numba_spec = importlib.util.find_spec("numba")
    if numba_spec is None or numba_spec.origin is None:
        return None
    stamp = hashlib.sha1()
    stamp.update(Path(__file__).read_bytes())
    stamp.update(f"{sys.version}{os.stat(numba_spec.origin).st_mtime_ns}".encode())
    name = f"circuits_pl-fused-{spec.key}-{stamp.hexdigest()[:16]}.warm"
    for folder in _cache_folders():
        if (folder / name).exists() or os.access(folder, os.W_OK):
            return folder / name
    return None


def _cache_folders() -> list[Path]:
    """Where numba caches this module's kernels, in numba's order of preference."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [Path(os.environ["NUMBA_CACHE_DIR"])]
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba"
    return [Path(__file__).parent / "__pycache__", user]


def _is_marked_warm(spec: Spec) -> bool:
    marker = _marker(spec)
    return marker is not None and marker.exists()


def _mark_warm(spec: Spec) -> None:
    try:
        marker = _marker(spec)
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    except OSError:
        pass  # nowhere writable: the next run just starts a warm-up it did not need


def _jit(fn: Callable) -> Callable:
    """numba's njit with the kernels' options, cached on disk where numba finds a writable place."""
    import numba

    try:
        return numba.njit(fastmath=set(FASTMATH), cache=True, nogil=True)(fn)
    except RuntimeError as err:  # "cannot cache function ...: no locator available": nowhere writable
        if "cannot cache" not in str(err):
            raise
        return numba.njit(fastmath=set(FASTMATH), nogil=True)(fn)


_stack_floats: Any = None  # the intrinsic below, made on first use (it needs numba)
_carray: Any = None
_apply_rule: Any = None
_batch_last: Any = None
_update_one_hidden: Any = None


def _load_numba() -> None:
    """Define the numba pieces the kernels call, once. They are module globals (not closure
    variables) because numba's cache key pickles a kernel's closure variables: only constants there."""
    global _stack_floats, _carray, _apply_rule, _batch_last, _update_one_hidden
    if _stack_floats is not None:
        return
    import numba
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    # numba has no stack arrays; its np.empty is a heap allocation that LLVM cannot keep in registers.
    # A fixed-size alloca, once the loops over units are unrolled, becomes plain registers (SROA):
    # that is what lets the per-unit sums be vectorised over the batch.
    @intrinsic
    def stack_floats(typingctx, size):
        def codegen(context, builder, signature, args):
            (n,) = args
            if not isinstance(n, ir.Constant):
                raise TypeError("_stack_floats needs a compile-time constant size")
            return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=n)

        return types.CPointer(types.float32)(size), codegen

    _stack_floats = stack_floats
    _carray = numba.carray
    _apply_rule = _jit(_apply_rule_py)
    # inlined into each kernel (numba IR), where the input count, the rule and the bias flag are compile-time
    # constants again: as calls, the update of a 2-2-1 member took 0.63 µs per step against 0.44-0.50 µs
    _batch_last = numba.njit(inline="always")(_batch_last_py)
    _update_one_hidden = numba.njit(inline="always")(_update_one_hidden_py)


def _batch_last_py(flat, x, n_in):
    """One step's inputs from the stream's sample-major layout ``flat`` (B * n_in) into ``x`` (n_in, B),
    batch-last: the layout every kernel reads, made once per step for all members."""
    for b in range(x.shape[1]):
        for i in range(n_in):
            x[i, b] = flat[b * n_in + i]


def _update_one_hidden_py(w1, w2, b1, b2, g_w1, g_w2, g_b1, g_b2, states, k, bias, rule, step, lr, wd, momentum,
                          dampening, nesterov, beta1, beta2, eps):
    """The rule's update of member ``k`` of a one-hidden-layer net: each parameter from its gradient,
    with its rule state (``states``: the 4 first buffers, then the 4 second ones, per parameter)."""
    args = (rule, step, lr, wd, momentum, dampening, nesterov, beta1, beta2, eps)
    _apply_rule(w1, g_w1, states[0][k], states[4][k], *args)
    _apply_rule(w2, g_w2, states[1][k], states[5][k], *args)
    if bias:
        _apply_rule(b1, g_b1, states[2][k], states[6][k], *args)
        _apply_rule(b2, g_b2, states[3][k], states[7][k], *args)


def _apply_rule_py(p, g, buf, buf2, rule, step, lr, wd, momentum, dampening, nesterov, beta1, beta2, eps):
    """One update of one member's parameter ``p`` (1-D view) from its gradient ``g``, as torch 2.13's
    ``_single_tensor_sgd``/``_single_tensor_adam`` (same order of operations; scalars as float32, as
    torch applies a Python scalar to a float32 tensor). ``buf``/``buf2``: the rule's state of ``p``."""
    f32 = np.float32
    lr32, wd32 = f32(lr), f32(wd)
    # Adam's per-step scalars in float64, as torch computes them from Python floats
    bias_correction1 = 1.0 - beta1 ** float(step)
    bias_correction2_sqrt = (1.0 - beta2 ** float(step)) ** 0.5
    step_size = f32(-(lr / bias_correction1))
    bc2, eps32 = f32(bias_correction2_sqrt), f32(eps)
    w1, b2, w2 = f32(1.0 - beta1), f32(beta2), f32(1.0 - beta2)
    m32, damp32 = f32(momentum), f32(1.0 - dampening)
    for q in range(p.shape[0]):
        d = g[q]
        if wd32 != 0:
            d = d + wd32 * p[q]
        if rule == 3:
            buf[q] = d
        elif rule == 0:
            p[q] = p[q] - lr32 * d
        elif rule == 1:
            if step == 1:
                buf[q] = d
            else:
                buf[q] = buf[q] * m32 + damp32 * d
            d = d + m32 * buf[q] if nesterov else buf[q]
            p[q] = p[q] - lr32 * d
        else:
            m = buf[q] + w1 * (d - buf[q])  # lerp with weight 1 - beta1 < 0.5
            v = buf2[q] * b2 + w2 * d * d
            buf[q], buf2[q] = m, v
            p[q] = p[q] + step_size * (m / (np.sqrt(v) / bc2 + eps32))


def _one_hidden(N_IN: int, H: int, BIAS: bool, RULE: int) -> Callable:  # noqa: N803 - constants of the kernel
    """The kernel of an N_IN-H-1 network (see the module docstring)."""
    NW1 = H * N_IN  # noqa: N806

    def block(params, states, xs, ys, first_step, lr, wd, momentum, dampening, nesterov, beta1, beta2, eps,
              lo, hi):
        W1, W2, B1, B2 = params[0], params[1], params[2], params[3]  # noqa: N806
        n_steps, batch = ys.shape[0], ys.shape[1]
        x = np.empty((N_IN, batch), np.float32)  # one step's inputs, batch-last
        scale = np.float32(2.0 / batch)  # d/d out of mean((out - y)^2), as torch's step: (out - y) * (2 / B)
        zero = np.float32(0.0)
        g_w1 = _carray(_stack_floats(NW1), NW1)
        g_w2 = _carray(_stack_floats(H), H)
        g_b1 = _carray(_stack_floats(H), H)
        g_b2 = _carray(_stack_floats(1), 1)
        h = _carray(_stack_floats(H), H)
        for s in range(n_steps):
            flat, y = xs[s], ys[s]
            _batch_last(flat, x, N_IN)
            for k in range(lo, hi):
                w1, w2, b1, b2 = W1[k], W2[k], B1[k], B2[k]
                for q in range(NW1):
                    g_w1[q] = zero
                for j in range(H):
                    g_w2[j] = zero
                    g_b1[j] = zero
                g_b2[0] = zero
                for b in range(batch):
                    for j in range(H):
                        a = w1[j * N_IN] * x[0, b]
                        for i in range(1, N_IN):
                            a += w1[j * N_IN + i] * x[i, b]
                        if BIAS:
                            a += b1[j]
                        h[j] = zero if a < zero else a  # ReLU; a NaN stays NaN, as torch's
                    out = w2[0] * h[0]
                    for j in range(1, H):
                        out += w2[j] * h[j]
                    if BIAS:
                        out += b2[0]
                    e = (out - y[b]) * scale
                    if BIAS:
                        g_b2[0] += e
                    for j in range(H):
                        g_w2[j] += e * h[j]
                        t = w2[j] * e if h[j] > zero else zero  # ReLU's backward: 0 where the unit is off
                        if BIAS:
                            g_b1[j] += t
                        for i in range(N_IN):
                            g_w1[j * N_IN + i] += t * x[i, b]
                _update_one_hidden(w1, w2, b1, b2, g_w1, g_w2, g_b1, g_b2, states, k, BIAS, RULE, first_step + s,
                                   lr, wd, momentum, dampening, nesterov, beta1, beta2, eps)

    return block


# The one-pass kernel keeps (N_IN + 1 + BIAS) sums per hidden unit in registers, its loops over units
# unrolled. Above 8 units LLVM's unrolling and vectorising of that body became unpredictable (several
# times slower per unit, by a factor that jumped from width to width: benchmarks/kernel_widths.py).
# Wider layers use a kernel whose innermost loops all run over the batch: unit by unit, the output is
# accumulated in a batch-sized array (pass 1), then each unit's gradient sums are one pass each (pass 2).
WIDE = 8


def _one_hidden_wide(N_IN: int, H: int, BIAS: bool, RULE: int) -> Callable:  # noqa: N803
    """The kernel of an N_IN-H-1 network with H > WIDE (see the comment above)."""
    NW1 = H * N_IN  # noqa: N806

    def block(params, states, xs, ys, first_step, lr, wd, momentum, dampening, nesterov, beta1, beta2, eps,
              lo, hi):
        W1, W2, B1, B2 = params[0], params[1], params[2], params[3]  # noqa: N806
        n_steps, batch = ys.shape[0], ys.shape[1]
        x = np.empty((N_IN, batch), np.float32)  # one step's inputs, batch-last
        err = np.empty(batch, np.float32)  # the output, then its error scaled as the gradient of the mean
        scale = np.float32(2.0 / batch)
        zero = np.float32(0.0)
        g_w1 = np.empty(NW1, np.float32)
        g_w2 = np.empty(H, np.float32)
        g_b1 = np.empty(H, np.float32)
        g_b2 = np.empty(1, np.float32)
        s_w1 = _carray(_stack_floats(N_IN), N_IN)  # one unit's input-weight sums (registers)
        for s in range(n_steps):
            flat, y = xs[s], ys[s]
            _batch_last(flat, x, N_IN)
            for k in range(lo, hi):
                w1, w2, b1, b2 = W1[k], W2[k], B1[k], B2[k]
                for b in range(batch):
                    err[b] = b2[0] if BIAS else zero
                for j in range(H):  # pass 1: the output, unit by unit
                    c = b1[j] if BIAS else zero
                    v = w2[j]
                    for b in range(batch):
                        a = w1[j * N_IN] * x[0, b]
                        for i in range(1, N_IN):
                            a += w1[j * N_IN + i] * x[i, b]
                        if BIAS:
                            a += c
                        err[b] += v * (zero if a < zero else a)
                sum_e = zero
                for b in range(batch):
                    e = (err[b] - y[b]) * scale
                    err[b] = e
                    sum_e += e
                g_b2[0] = sum_e
                for j in range(H):  # pass 2: each unit's gradient sums
                    c = b1[j] if BIAS else zero
                    v = w2[j]
                    s_w2 = zero
                    s_b1 = zero
                    for i in range(N_IN):
                        s_w1[i] = zero
                    for b in range(batch):
                        a = w1[j * N_IN] * x[0, b]
                        for i in range(1, N_IN):
                            a += w1[j * N_IN + i] * x[i, b]
                        if BIAS:
                            a += c
                        e = err[b]
                        h = zero if a < zero else a
                        s_w2 += e * h
                        t = v * e if h > zero else zero
                        s_b1 += t
                        for i in range(N_IN):
                            s_w1[i] += t * x[i, b]
                    g_w2[j] = s_w2
                    g_b1[j] = s_b1
                    for i in range(N_IN):
                        g_w1[j * N_IN + i] = s_w1[i]
                _update_one_hidden(w1, w2, b1, b2, g_w1, g_w2, g_b1, g_b2, states, k, BIAS, RULE, first_step + s,
                                   lr, wd, momentum, dampening, nesterov, beta1, beta2, eps)

    return block


def _two_hidden(N_IN: int, H1: int, H2: int, BIAS: bool, RULE: int) -> Callable:  # noqa: N803
    """The kernel of an N_IN-H1-H2-1 network (see the module docstring)."""
    NW1, NW2 = H1 * N_IN, H2 * H1  # noqa: N806

    def block(params, states, xs, ys, first_step, lr, wd, momentum, dampening, nesterov, beta1, beta2, eps,
              lo, hi):
        W1, W2, W3 = params[0], params[1], params[2]  # noqa: N806
        B1, B2, B3 = params[3], params[4], params[5]  # noqa: N806
        n_steps, batch = ys.shape[0], ys.shape[1]
        x = np.empty((N_IN, batch), np.float32)  # one step's inputs, batch-last
        scale = np.float32(2.0 / batch)
        zero = np.float32(0.0)
        g_w1 = _carray(_stack_floats(NW1), NW1)
        g_w2 = _carray(_stack_floats(NW2), NW2)
        g_w3 = _carray(_stack_floats(H2), H2)
        g_b1 = _carray(_stack_floats(H1), H1)
        g_b2 = _carray(_stack_floats(H2), H2)
        g_b3 = _carray(_stack_floats(1), 1)
        h1 = _carray(_stack_floats(H1), H1)
        h2 = _carray(_stack_floats(H2), H2)
        d2 = _carray(_stack_floats(H2), H2)
        for s in range(n_steps):
            flat, y = xs[s], ys[s]
            _batch_last(flat, x, N_IN)
            for k in range(lo, hi):
                w1, w2, w3, b1, b2, b3 = W1[k], W2[k], W3[k], B1[k], B2[k], B3[k]
                for q in range(NW1):
                    g_w1[q] = zero
                for q in range(NW2):
                    g_w2[q] = zero
                for j in range(H1):
                    g_b1[j] = zero
                for m in range(H2):
                    g_w3[m] = zero
                    g_b2[m] = zero
                g_b3[0] = zero
                for b in range(batch):
                    for j in range(H1):
                        a = w1[j * N_IN] * x[0, b]
                        for i in range(1, N_IN):
                            a += w1[j * N_IN + i] * x[i, b]
                        if BIAS:
                            a += b1[j]
                        h1[j] = zero if a < zero else a
                    for m in range(H2):
                        a = w2[m * H1] * h1[0]
                        for j in range(1, H1):
                            a += w2[m * H1 + j] * h1[j]
                        if BIAS:
                            a += b2[m]
                        h2[m] = zero if a < zero else a
                    out = w3[0] * h2[0]
                    for m in range(1, H2):
                        out += w3[m] * h2[m]
                    if BIAS:
                        out += b3[0]
                    e = (out - y[b]) * scale
                    if BIAS:
                        g_b3[0] += e
                    for m in range(H2):
                        g_w3[m] += e * h2[m]
                        t = w3[m] * e if h2[m] > zero else zero
                        d2[m] = t
                        if BIAS:
                            g_b2[m] += t
                        for j in range(H1):
                            g_w2[m * H1 + j] += t * h1[j]
                    for j in range(H1):
                        t = w2[j] * d2[0]
                        for m in range(1, H2):
                            t += w2[m * H1 + j] * d2[m]
                        t = t if h1[j] > zero else zero
                        if BIAS:
                            g_b1[j] += t
                        for i in range(N_IN):
                            g_w1[j * N_IN + i] += t * x[i, b]
                args = (RULE, first_step + s, lr, wd, momentum, dampening, nesterov, beta1, beta2, eps)
                _apply_rule(w1, g_w1, states[0][k], states[6][k], *args)
                _apply_rule(w2, g_w2, states[1][k], states[7][k], *args)
                _apply_rule(w3, g_w3, states[2][k], states[8][k], *args)
                if BIAS:
                    _apply_rule(b1, g_b1, states[3][k], states[9][k], *args)
                    _apply_rule(b2, g_b2, states[4][k], states[10][k], *args)
                    _apply_rule(b3, g_b3, states[5][k], states[11][k], *args)

    return block


def cache_dir_note() -> str:
    """Where numba keeps compiled kernels (for messages and benchmarks)."""
    return os.environ.get("NUMBA_CACHE_DIR") or "circuits_pl/__pycache__ (or the user's cache directory)"

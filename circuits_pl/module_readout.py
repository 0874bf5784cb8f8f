"""Readouts of a trained module's members: the library under the end of fit and ``inspect``.

A :class:`~circuits_pl.module.CircuitModule` holds K members; these functions read one member's
circuit (the full :class:`~circuits_pl.readout.Readout`), describe every member cheaply for
results.json, and draw a member's figures. They take a module and its data module, wherever these
came from: the end of ``fit`` (:mod:`circuits_pl.run_summary`) or a checkpoint (:mod:`circuits_pl.saved_run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import MeanSquaredError

from circuits_pl import plots
from circuits_pl.data import CircuitDataModule
from circuits_pl.module import CircuitModule
from circuits_pl.readout import Readout, certify, describe_member, read_circuit
from circuits_pl.verdicts import Decision, decide


def member_weights(module: CircuitModule, member: int) -> list[torch.Tensor]:
    """One member's weight matrices (``(out, in)``, input layer first), detached, on the CPU."""
    return [w.detach().cpu() for w in module.net.weights_of(member)]


def test_inputs(data: CircuitDataModule) -> torch.Tensor:
    """The run's fixed test inputs ``(N, arity)`` in float64: what every readout is measured on."""
    return data.fixed_set("test").tensors[0].to(torch.float64)


def target_bounds(module: CircuitModule) -> certify.Distance | None:
    """Every member's distance to the target over the input box, at once: certified for 1 or 2 inputs and a
    piecewise-linear target, else sampled (``certify.to_target``); None for nets with biases."""
    if module.hparams.bias:
        return None
    # per group of cells (one architecture each), then joined: certified only if every group is
    parts = [certify.to_target(module.task, certify.stack(net.weights)) for net in module.net.groups]
    if len(parts) == 1:
        return parts[0]
    sampled = [p.why_sampled for p in parts if not p.certified]
    return certify.Distance(np.concatenate([p.max_error for p in parts]), np.concatenate([p.mse for p in parts]),
                            np.concatenate([p.argmax for p in parts]), not sampled, sampled[0] if sampled else None)


def member_decisions(module: CircuitModule, matched: list[bool], bounds: certify.Distance | None) -> list[Decision]:
    """Solved and exact for every member, by ``circuits_pl.verdicts.decide``: the certified MSE over the box
    where there is one, else the validation MSE. What results.json, the Circuit line and inspect all say."""
    val = module.population.val_mse.cpu().double().tolist()
    thresholds = module.population.success_mse.cpu().tolist()  # per member: a sweep's sizes differ
    out = []
    for k in range(module.members):
        box = float(bounds.mse[k]) if bounds is not None and bounds.certified else None
        out.append(decide(matched[k], thresholds[k], box, val[k]))
    return out


def read_member(module: CircuitModule, data: CircuitDataModule, member: int | None = None,
                bounds: certify.Distance | None = None) -> Readout:
    """The full readout of one member (default: the selected member) on the run's test set; solved and
    exact decided as for results.json (``bounds``: :func:`target_bounds`, computed here if not given)."""
    k = module.selected_member if member is None else member
    bounds = target_bounds(module) if bounds is None else bounds

    def net(z: torch.Tensor) -> torch.Tensor:  # the member as it runs (biases included), on its device
        with torch.no_grad():
            return module.net(z.to(module.device, torch.float32), member=k).to("cpu", torch.float64)

    return read_circuit(member_weights(module, k), module.task, test_inputs(data), fn=net,
                        success_mse=float(module.population.success_mse[k]),
                        val_mse=float(module.population.val_mse[k]),
                        target_bound=bounds.member(k))


NO_CIRCUIT = {"formula": None, "rough_formula": None, "circuit": None, "matched": False, "family": None,
              "sparsity_error": None, "reason": None, "formula_max_error": None}


def describe_members(module: CircuitModule, data: CircuitDataModule) -> list[dict[str, Any]]:
    """Per member, for results.json: its formula, the circuit it is (a catalogue name or its structural
    form, or None), whether that circuit is the task's function (``matched``, whatever the member's
    loss: results.json's ``exact`` also needs it solved), its family and sparsity error.

    ``circuits_pl.readout.describe_member`` per member (a few ms each). Nets with biases get no
    circuit: the readout is for bias-free nets (their function is not positively homogeneous).
    """
    if module.hparams.bias:
        return [dict(NO_CIRCUIT) for _ in range(module.members)]
    x = test_inputs(data)
    out = []
    # of the finite members, per architecture (a sweep's cells differ): distances to their formulas at once
    nets: dict[tuple, list] = {}
    for k in range(module.members):
        weights = member_weights(module, k)
        if not all(bool(torch.isfinite(w).all()) for w in weights):
            out.append(dict(NO_CIRCUIT, reason="non-finite weights"))
            continue
        member = describe_member(weights, module.task, x, to_formula=False)
        d = member.as_dict()
        out.append({"formula": d["formula"], "rough_formula": d["rough_formula"], "circuit": d["label"],
                    "matched": bool(d["exact"]), "family": d["family"], "sparsity_error": d["sparsity_error"],
                    "reason": d["reason"], "formula_max_error": k})
        nets.setdefault(tuple(w.shape for w in weights), []).append((out[-1], weights, member.formula_weights))
    for same in nets.values():
        distances = certify.between_each([n for _, n, _ in same], [f for _, _, f in same]).max_error.tolist()
        for (c, _, _), dist in zip(same, distances, strict=True):
            c["formula_max_error"] = dist
    return out


@torch.no_grad()
def members_mse(module: CircuitModule, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member MSE ``(K,)`` on inputs ``x (N, in)`` and targets ``y (N, 1)`` (torchmetrics)."""
    metric = MeanSquaredError(num_outputs=module.members).to(module.device)
    preds = module.net(x.to(module.device)).squeeze(-1).T  # (N, K): one "output" per member
    metric.update(preds, y.to(module.device).expand(-1, module.members))
    return metric.compute().reshape(-1).detach()


def test_mse(module: CircuitModule, data: CircuitDataModule) -> torch.Tensor:
    """Per-member MSE ``(K,)`` on the fixed test points."""
    x, y = data.fixed_set("test").tensors
    return members_mse(module, x, y)


def heldout_mse(module: CircuitModule, data: CircuitDataModule) -> torch.Tensor | None:
    """Per-member MSE ``(K,)`` on the input directions training never saw (cone runs), else None."""
    if data.cone is None:
        return None
    x, y = data.fixed_set("test", heldout=True).tensors
    return members_mse(module, x, y)


def write_figures(directory: str | Path, module: CircuitModule, member: int,
                  readout: Readout | None) -> list[Path]:
    """The run's loss curves, and one member's learned function and circuit graph, as PNGs.

    Loss curves come from the module's own loss history (kept in checkpoints), so they exist
    whatever the logger. Nets with biases get no circuit graph (there is no circuit to draw).
    """
    directory = Path(directory)
    written = []
    if module.population.loss_history:
        written.append(plots.plot_losses(module.population.loss_history, directory / "losses.png"))
    runs = None
    if module.hparams.bias:  # the weights alone do not describe a net with biases: draw it as it runs
        def runs(z: torch.Tensor) -> torch.Tensor:
            return module.net(z.to(module.device, torch.float32), member=member)
    function = plots.plot_function(member_weights(module, member), module.task,
                                   directory / f"function_member{member}.png", fn=runs)
    if function is not None:
        written.append(function)
    if readout is not None:
        written.append(plots.plot_circuit(readout.canonical, module.task, directory / f"circuit_member{member}.png"))
    return written

"""A function's unique form L·x + Σ c·|d·x| with simple rational coefficients, and its text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from circuits_pl.readout.matrices import MINUS, input_names, join_signed

DENOMINATOR = 12  # simple fractions: denominators up to this (½, ⅓, ¼, ... 1/12)
HALF = "\u00bd"


@dataclass(frozen=True)
class Form:
    """L·x + Σ c·|d·x| with simple rational coefficients; d integer, coprime, first non-zero > 0."""

    linear: tuple[Fraction, ...]
    kinks: tuple[tuple[tuple[int, ...], Fraction], ...]  # sorted by direction

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        y = x @ torch.tensor([float(v) for v in self.linear], dtype=torch.float64)
        for d, c in self.kinks:
            y = y + float(c) * (x @ torch.tensor(d, dtype=torch.float64)).abs()
        return y[:, None]

    def text(self, names: Sequence[str] | None = None) -> str:
        """``½(a + b) − ½|a − b|``; ``0`` for the zero function."""
        names = list(names) if names is not None else input_names(len(self.linear))
        parts: list[tuple[bool, str]] = []
        parts += _linear_parts(self.linear, names)
        for d, c in self.kinks:
            negative, pre = _coef(c)
            parts.append((negative, pre + "|" + _terms(d, names)[1] + "|"))
        return join_signed(parts)

    def crease_text(self, names: Sequence[str] | None = None) -> str:
        """The kinks' lines, ``a = b`` and ``a = 0``."""
        names = list(names) if names is not None else input_names(len(self.linear))
        return ", ".join(line_text(d, names) for d, _ in self.kinks)


def simple_fraction(v: float) -> Fraction:
    return Fraction(v).limit_denominator(DENOMINATOR)


def line_text(d: Sequence[int], names: Sequence[str]) -> str:
    """The line d·x = 0 as ``a = b``, ``a = −b``, ``a = 0``."""
    left = [(c, t) for c, t in zip(d, names, strict=True) if c > 0]
    right = [(-c, t) for c, t in zip(d, names, strict=True) if c < 0]
    side = lambda ts: " + ".join(t if c == 1 else f"{c}·{t}" for c, t in ts)  # noqa: E731
    if not right:
        rest = left[1:]
        if not rest:
            return f"{side(left)} = 0"
        return f"{side(left[:1])} = {MINUS}" + f" {MINUS} ".join(t if c == 1 else f"{c}·{t}" for c, t in rest)
    return f"{side(left)} = {side(right)}"


def _coef(c: Fraction) -> tuple[bool, str]:
    """(negative, prefix): ``""`` for 1, ``½`` for 1/2, ``2·``, ``1/3·``."""
    a = abs(c)
    if a == 1:
        return c < 0, ""
    if a == Fraction(1, 2):
        return c < 0, HALF
    return c < 0, (f"{a}·" if a.denominator == 1 else f"{a.numerator}/{a.denominator}·")


def _term_parts(coefs: Sequence, names: Sequence[str]) -> list[tuple[bool, str]]:
    out = []
    for c, t in zip(coefs, names, strict=True):
        if c:
            neg, pre = _coef(Fraction(c))
            out.append((neg, pre + t))
    return out


def _terms(coefs: Sequence, names: Sequence[str]) -> tuple[bool, str]:
    return False, join_signed(_term_parts(coefs, names))


def _linear_parts(coefs: tuple[Fraction, ...], names: Sequence[str]) -> list[tuple[bool, str]]:
    """The linear part, with a common factor outside when every term has the same size: ½(a + b)."""
    sizes = {abs(c) for c in coefs if c}
    if len(sizes) == 1 and next(iter(sizes)) != 1 and sum(1 for c in coefs if c) > 1:
        first = next(c for c in coefs if c)
        inner = tuple(c / first for c in coefs)
        neg, pre = _coef(first)
        return [(neg, pre + "(" + join_signed(_term_parts(inner, names)) + ")")]
    return _term_parts(coefs, names)


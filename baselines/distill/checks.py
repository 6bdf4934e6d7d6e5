"""Range checks for the distillation baselines' ``Params`` (no registration here).

Each raises ``ValueError("<param> must be <rule> (got <value>)")`` from ``Params.__post_init__``; the
runner turns it into one CLI error line (``stbench: error: method dc: lr_data must be > 0 (got -1)``).
Only ranges that do not depend on the data are checked here; data-dependent limits belong in
``Method.check(num_windows, num_locations)``.
"""
from __future__ import annotations

import math


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def require(ok: bool, name: str, rule: str, value) -> None:
    if not ok:
        shown = repr(value) if isinstance(value, str) else value
        raise ValueError(f"{name} must be {rule} (got {shown})")


def positive(params, *names: str) -> None:
    """Each of ``names`` is a number > 0 (learning rates, ridge terms)."""
    for name in names:
        value = getattr(params, name)
        require(_number(value) and value > 0, name, "> 0", value)


def at_least(params, minimum, *names: str) -> None:
    """Each of ``names`` is a number >= ``minimum`` (counts: 1, or 0 where 0 means the preset's)."""
    for name in names:
        value = getattr(params, name)
        require(_number(value) and value >= minimum, name, f">= {minimum}", value)


def between(params, name: str, low, high, low_open: bool = False, high_open: bool = False) -> None:
    """``name`` lies in the interval from ``low`` to ``high`` (closed unless said otherwise)."""
    value = getattr(params, name)
    ok = _number(value) and (value > low if low_open else value >= low) and (value < high if high_open
                                                                           else value <= high)
    rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    require(ok, name, rule, value)


def one_of(params, name: str, choices: tuple) -> None:
    value = getattr(params, name)
    require(value in choices, name, "one of " + ", ".join(map(str, choices)), value)


def batch_fits(name: str, value: int, num_windows: int) -> None:
    """``Method.check``: an explicitly set batch (``value`` > 0) is at most the training windows."""
    if value and value > num_windows:
        raise ValueError(f"{name} {value} exceeds the {num_windows} training windows; set {name} <= "
                         f"{num_windows} (or 0 for the default)")

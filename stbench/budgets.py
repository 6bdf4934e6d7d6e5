"""Budgets: compression ratios for condensation and retention ratios for pruning.

Compression ratio rho = kept training elements (windows x locations) / original. Temporal-only
methods keep rho of the windows and every location. Bi-dimensional methods split rho into a temporal
ratio (windows) times a spatial ratio (locations); the STemDist paper's defaults are
0.5% = 10% x 5% and 1% = 10% x 10%.

Retention ratio r, on one of two bases. ``total`` (default): sample visits over *all* epochs =
r x epochs x training windows, for every pruner, so pruners that anneal (train on all data in their
last epochs: ST-Prune, InfoBatch) prune harder in their pruned epochs to make the same number of
visits as Soft Random (``Retention.pruned_epoch_ratio``). ``pruned``: r over the pruned epochs only,
the papers' protocol (an annealing pruner then makes more visits than r).
"""
from __future__ import annotations

from dataclasses import dataclass

from stbench import UserError

PAPER_SPLITS = {0.005: (0.1, 0.05), 0.01: (0.1, 0.1)}
DEFAULT_TEMPORAL = 0.1


def _check_ratio(value: float, what: str) -> float:
    if not 0 < value <= 1:
        raise UserError(f"{what} {value:g} is not in (0, 1]: give a fraction, e.g. 0.005 for 0.5%")
    return value


@dataclass(frozen=True)
class Compression:
    ratio: float
    temporal: float | None = None   # explicit split for bi-dimensional methods
    spatial: float | None = None

    def __post_init__(self):
        _check_ratio(self.ratio, "compression ratio")
        if (self.temporal is None) != (self.spatial is None):
            raise UserError("give both parts of a temporal x spatial split, e.g. 0.005=0.1x0.05")
        if self.temporal is not None:
            _check_ratio(self.temporal, "temporal ratio")
            _check_ratio(self.spatial, "spatial ratio")
            if abs(self.temporal * self.spatial - self.ratio) > 1e-9 * max(1.0, self.ratio) + 1e-12:
                raise UserError(f"split {self.temporal:g}x{self.spatial:g} does not multiply to {self.ratio:g}")

    @property
    def label(self) -> str:
        base = f"{100 * self.ratio:g}%"
        return base if self.temporal is None else f"{base}={self.temporal:g}x{self.spatial:g}"

    def bidimensional_split(self) -> tuple[float, float]:
        """(temporal, spatial): explicit, the paper's default, or 10% of windows x the rest."""
        if self.temporal is not None:
            return self.temporal, self.spatial
        for ratio, split in PAPER_SPLITS.items():
            if abs(ratio - self.ratio) < 1e-12:
                return split
        temporal = max(DEFAULT_TEMPORAL, self.ratio)
        return temporal, self.ratio / temporal

    def sizes(self, num_windows: int, num_locations: int, bidimensional: bool) -> tuple[int, int]:
        """Synthetic (windows, locations) for a training set of the given size."""
        if bidimensional:
            temporal, spatial = self.bidimensional_split()
            m, n = round(temporal * num_windows), round(spatial * num_locations)
        else:
            m, n = round(self.ratio * num_windows), num_locations
        if m < 1 or n < 1:
            raise UserError(
                f"compression {self.label} of {num_windows} windows x {num_locations} locations keeps "
                f"{m} windows x {n} locations; choose a larger ratio or a larger dataset")
        return m, n

    def to_dict(self) -> dict:
        return {"kind": "compression", "ratio": self.ratio, "temporal": self.temporal, "spatial": self.spatial}


RETENTION_BASES = ("total", "pruned")


@dataclass(frozen=True)
class Retention:
    ratio: float
    basis: str = "total"   # total: r of the visits over all epochs | pruned: r of each pruned epoch

    def __post_init__(self):
        _check_ratio(self.ratio, "retention ratio")
        if self.basis not in RETENTION_BASES:
            raise UserError(f"retention basis {self.basis!r} is not one of {', '.join(RETENTION_BASES)}")

    @property
    def label(self) -> str:
        return f"r={100 * self.ratio:g}%"

    def pruned_epoch_ratio(self, num_epochs: int, pruned_epochs: int) -> float:
        """The share of the samples each of ``pruned_epochs`` pruned epochs visits, when the other
        epochs visit every sample. Pruned basis: r. Total basis: (r E - (E - P)) / P, so the visits over
        all E epochs are r E n; 0 when the annealed epochs alone exceed r (the target is unreachable:
        a pruner then keeps its minimum and records the share it reached)."""
        if self.basis == "pruned" or pruned_epochs >= num_epochs:
            return self.ratio
        if pruned_epochs <= 0:
            return 1.0
        return max(0.0, (self.ratio * num_epochs - (num_epochs - pruned_epochs)) / pruned_epochs)

    def to_dict(self) -> dict:
        return {"kind": "retention", "ratio": self.ratio, "basis": self.basis}


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{what} {text!r} is not a number; write e.g. 0.005") from None


def parse_compressions(text: str) -> list[Compression]:
    """``0.005,0.01`` or with splits ``0.005=0.1x0.05,0.01``."""
    budgets = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        ratio, _, split = part.partition("=")
        if split:
            temporal, sep, spatial = split.partition("x")
            if not sep:
                raise UserError(f"budget split {split!r} must read TEMPORALxSPATIAL, e.g. 0.1x0.05")
            budgets.append(Compression(_number(ratio, "budget"), _number(temporal, "temporal ratio"),
                                       _number(spatial, "spatial ratio")))
        else:
            budgets.append(Compression(_number(ratio, "budget")))
    if not budgets:
        raise UserError("no budget given; write e.g. --budgets 0.005,0.01")
    return budgets


def parse_retentions(text: str, basis: str = "total") -> list[Retention]:
    budgets = [Retention(_number(p.strip(), "retention"), basis) for p in text.split(",") if p.strip()]
    if not budgets:
        raise UserError("no retention given; write e.g. --retention 0.1,0.3")
    return budgets


def budget_from_dict(spec: dict | None) -> Compression | Retention | None:
    """Inverse of ``to_dict`` (a cell spec carries its budget as JSON)."""
    if spec is None:
        return None
    if spec["kind"] == "compression":
        return Compression(spec["ratio"], spec.get("temporal"), spec.get("spatial"))
    return Retention(spec["ratio"], spec.get("basis", "pruned"))   # records before the basis: pruned

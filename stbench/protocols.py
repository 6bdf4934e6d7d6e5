"""The two method protocols and what passes between a method and the harness.

* ``Condenser`` (static): ``condense(train, budget, ctx) -> CondensedSet``, once per run.
* ``Pruner`` (dynamic): ``start(n, budget, ctx)``, then each epoch ``epoch(e, E) -> (ids, weights)``
  and after each batch ``update(ids, per_sample_loss)``.

Methods declare their hyper-parameters as a nested ``Params`` dataclass; the harness builds
``Method(Params(**overrides))`` and records the resolved parameters with every run. Methods draw
randomness only from ``ctx.rng`` (numpy) and ``ctx.torch_generator`` (torch).
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from stbench.budgets import Compression, Retention
from stbench.data.windows import Series, WindowSet
from stbench.measure import Meter
from stbench.sources import FixedSchedule, source_for


LABEL_SOURCES = ("real", "learned", "expert-relabelled", "teacher")


@dataclass
class CondensedSet:
    """The output of a static method: either synthetic tensors or indices into the real training data.

    Synthetic: ``x`` (M', L_in, N', C) normalised, ``y`` (M', L_out, N', C_t) normalised target units.
    Coreset: ``indices`` (M',) training window ids and optionally ``locations`` (N',) original
    location ids. ``sample_weight`` (M',) and ``location_weight`` (N',) enter the training loss as
    given (the trainer's convention: loss = mean_i w_i * l_i, so weights should average 1).
    ``hints`` carries training settings the method prescribes: trainer fields (e.g.
    ``location_subsets`` for STemDist's Algorithm 2, ``batch_size``, a learned ``lr`` for MTT) and
    ``input_channels`` when the set feeds only some channels to the model (e.g. the target alone).
    ``info`` holds diagnostics stored with the run (e.g. time per outer iteration, loss curves);
    ``info["reused_setup_s"]`` is the cost of a setup stage taken from a cache (seconds), which the
    runner adds to the condensation time.
    """
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    indices: np.ndarray | None = None
    locations: np.ndarray | None = None
    sample_weight: torch.Tensor | None = None
    location_weight: torch.Tensor | None = None
    hints: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if (self.x is None) == (self.indices is None):
            raise ValueError("a CondensedSet holds either synthetic x/y or coreset indices")
        if self.x is not None and (self.y is None or self.x.shape[0] != self.y.shape[0]):
            raise ValueError("synthetic x and y must have the same number of windows")

    def shape(self, train: WindowSet) -> tuple[int, int]:
        """(windows, locations) kept."""
        if self.x is not None:
            return int(self.x.shape[0]), int(self.x.shape[2])
        n = train.series.num_locations if self.locations is None else len(self.locations)
        return len(self.indices), n

    def state(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_state(cls, state, train: WindowSet) -> "CondensedSet":
        """Rebuild a saved set, checking it fits ``train``; ValueError for anything malformed."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(state, dict) or not set(state) <= names:
            raise ValueError("not a condensed-set state")
        condensed = cls(**state)
        condensed.validate(train)
        return condensed

    def validate(self, train: WindowSet) -> None:
        """ValueError unless every part has the type and shape the trainer expects for ``train``."""
        n_loc, channels = train.series.num_locations, len(train.series.data.targets)
        if self.x is not None:
            if not (isinstance(self.x, torch.Tensor) and isinstance(self.y, torch.Tensor)
                    and self.x.ndim == 4 and self.y.ndim == 4 and self.x.is_floating_point()):
                raise ValueError("synthetic x/y must be 4-d float tensors")
            if self.y.shape[2] != self.x.shape[2] or self.y.shape[3] != channels:
                raise ValueError(f"synthetic y of shape {tuple(self.y.shape)} does not match x {tuple(self.x.shape)}")
            m, n = self.x.shape[0], self.x.shape[2]
        else:
            _check_ids(self.indices, len(train), "indices")
            m = len(self.indices)
            n = n_loc if self.locations is None else len(_check_ids(self.locations, n_loc, "locations"))
        if m < 1 or not 1 <= n <= n_loc:
            raise ValueError(f"a condensed set of {m} windows x {n} locations")
        for name, size in (("sample_weight", m), ("location_weight", n)):
            weight = getattr(self, name)
            if weight is not None and (not isinstance(weight, torch.Tensor) or weight.shape != (size,)):
                raise ValueError(f"{name} must be a tensor of shape ({size},)")
        if not isinstance(self.hints, dict) or not isinstance(self.info, dict):
            raise ValueError("hints and info must be dicts")


def _check_ids(ids, upper: int, what: str) -> np.ndarray:
    if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a 1-d integer array")
    if len(ids) and (ids.min() < 0 or ids.max() >= upper):
        raise ValueError(f"{what} out of range 0..{upper - 1}")
    return ids


@dataclass
class RunContext:
    seed: int
    device: torch.device
    rng: np.random.Generator
    torch_generator: torch.Generator
    meter: Meter
    preset: str
    series: Series
    model_factory: Callable[..., torch.nn.Module]   # (num_locations, name=None) -> fresh model
    dataset_defaults: dict = field(default_factory=dict)


class Method(abc.ABC):
    """Shared by both protocols: parameters, family and the evaluation model they expect."""
    kind: ClassVar[str] = ""
    bidimensional: ClassVar[bool] = False   # reduces locations too: needs an inductive model
    uses_eval_model: ClassVar[bool] = False  # condensation trains/reads the evaluation model (CRAIG):
                                             # its cached set is then keyed by that model too
    labels: ClassVar[str] = "real"           # where the training targets come from (LABEL_SOURCES)

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def make(cls, overrides: dict) -> "Method":
        names = {f.name: f for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise KeyError(unknown)
        return cls(cls.Params(**overrides))

    def param_dict(self) -> dict:
        return dataclasses.asdict(self.params)

    def check(self, num_windows: int, num_locations: int) -> None:
        """Refuse parameters this dataset cannot honour, before any compute (raise ``ValueError``
        saying what to change, e.g. more location subsets than locations). Ranges that do not depend
        on the data belong in ``Params.__post_init__``, which also raises ``ValueError``."""

    def label_source(self) -> str:
        """Where the targets the evaluation model trains on come from (one of ``LABEL_SOURCES``):
        ``real`` windows, ``learned`` (optimised with the inputs), ``expert-relabelled`` (a frozen
        full-data expert's forecasts moved into them, CondTSF) or ``teacher`` (a full-data model's
        labels of the synthetic inputs, DM/IDM's default). Methods whose source depends on a parameter
        override this; reports group rows by it."""
        return self.labels

    def is_bidimensional(self, budget) -> bool:
        """Whether this run reduces locations (then it needs an inductive evaluation model)."""
        return self.bidimensional


class Condenser(Method):
    kind = "static"

    @abc.abstractmethod
    def condense(self, train: WindowSet, budget: Compression, ctx: RunContext) -> CondensedSet:
        """Reduce the training windows to the budget."""

    def training_plan(self, condensed: CondensedSet, train: WindowSet, model: torch.nn.Module,
                      ctx: RunContext):
        """(source, schedule) the evaluation model trains with: the condensed set, every epoch.

        Online coresets (e.g. CRAIG re-selecting with the model being trained) override this.
        """
        source = source_for(condensed, train)
        return source, FixedSchedule(len(source), condensed.sample_weight)


class Pruner(Method):
    kind = "dynamic"

    def start(self, num_samples: int, budget: Retention | None, ctx: RunContext) -> None:
        self.num_samples, self.budget, self.ctx = num_samples, budget, ctx

    @abc.abstractmethod
    def epoch(self, epoch: int, num_epochs: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Sample ids to visit this epoch and their loss weights (None: all ones)."""

    def update(self, ids: np.ndarray, per_sample_loss: torch.Tensor) -> None:
        """Per-sample losses of the batch just trained (most pruners score on them)."""

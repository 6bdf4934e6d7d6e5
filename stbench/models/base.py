"""The interface every forecasting backbone implements.

A model maps normalised inputs ``x`` of shape (B, L_in, N, C) to normalised predictions of shape
(B, L_out, N, C_out). ``loc_input`` (N, L_in, C) is the STemDist location-encoder input: the mean of the
normalised input windows per location (paper eq. 3). Transductive models ignore it and only accept the
N locations they were built for; inductive models (``inductive = True``) use it to embed any number of
locations, so they can train on N' < N locations and predict on all N.
"""
from __future__ import annotations

from torch import nn


class STModel(nn.Module):
    inductive: bool = False

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12):
        super().__init__()
        self.num_locations = num_locations
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_len = input_len
        self.output_len = output_len

    def twice_differentiable(self) -> STModel:
        """Use only operations with a double backward, for methods that differentiate through a
        gradient (gradient and trajectory matching). Returns the model."""
        return self

    def check_locations(self, n: int) -> None:
        """Transductive models refuse a location count other than the one they were built for."""
        if not self.inductive and n != self.num_locations:
            raise ValueError(
                f"{type(self).__name__} is transductive: built for {self.num_locations} locations, "
                f"got {n}; use an inductive model (e.g. mtgnn-le) to train on fewer locations"
            )

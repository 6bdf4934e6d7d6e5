import numpy as np
import pytest
import torch

from stbench import UserError
from stbench.data.windows import Scaler, Series, WindowSpec, split_bounds, split_starts


def test_splits_are_chronological_and_drop_crossing_windows():
    spec = WindowSpec(12, 12)
    starts = split_starts(1000, spec)
    bounds = split_bounds(1000, spec.split)
    assert bounds == [(0, 600), (600, 800), (800, 1000)]
    for name, (begin, end) in zip(("train", "val", "test"), bounds):
        s = starts[name]
        assert s.min() == begin and s.max() + spec.length == end  # every window fully inside its split
    assert starts["train"].max() + spec.length <= starts["val"].min()
    assert starts["val"].max() + spec.length <= starts["test"].min()
    # no time step is shared between a training window and a test window
    train_steps = set(np.concatenate([np.arange(s, s + 24) for s in starts["train"]]))
    test_steps = set(np.concatenate([np.arange(s, s + 24) for s in starts["test"]]))
    assert not train_steps & test_steps


def test_too_short_split_is_a_user_error():
    with pytest.raises(UserError, match="fewer than one window"):
        split_starts(60, WindowSpec(12, 12))


def test_scaler_uses_training_steps_only(tiny):
    data = tiny
    data.values[150:] += 1000.0          # a shift that only the val/test steps see
    train_end = split_bounds(240, (0.6, 0.2, 0.2))[0][1]
    scaler = Scaler.fit(data, train_end)
    observed = data.mask[:train_end]
    expected = [data.values[:train_end][..., c][observed[..., c]].mean() for c in range(2)]
    np.testing.assert_allclose(scaler.mean, expected, rtol=1e-5)
    assert scaler.mean.max() < 100


def test_batches_are_gathered_from_the_raw_array(tiny):
    series = Series(tiny, WindowSpec(12, 12))
    train = series.split("train")
    batch = train.batch([0, 5])
    s = train.starts[5]
    raw_y = tiny.values[s + 12:s + 24, :, [0]]
    torch.testing.assert_close(batch.y[1], torch.as_tensor(raw_y))
    expected_x = (tiny.values[s:s + 12] - series.scaler.mean) / series.scaler.std
    expected_x = np.where(tiny.mask[s:s + 12], expected_x, 0.0)
    torch.testing.assert_close(batch.x[1], torch.as_tensor(expected_x, dtype=torch.float32))
    assert not batch.mask[1][~torch.as_tensor(tiny.mask[s + 12:s + 24, :, [0]])].any()


def test_location_input_is_the_mean_input_window(tiny):
    series = Series(tiny, WindowSpec(12, 12))
    train = series.split("train")
    loc = train.location_input(ids=[1, 2, 3], locations=torch.tensor([0, 3]))
    x = train.batch([1, 2, 3], torch.tensor([0, 3])).x
    torch.testing.assert_close(loc, x.mean(0).permute(1, 0, 2))
    assert loc.shape == (2, 12, 2)


def test_input_channel_view_shares_data_and_selects_inputs(tiny):
    series = Series(tiny, WindowSpec(12, 12))
    view = series.with_inputs([1])
    assert view.values is series.values and view.num_channels == 1 and series.num_channels == 2
    full, only = series.split("train").batch([3]), view.split("train").batch([3])
    torch.testing.assert_close(only.x[..., 0], full.x[..., 1])
    torch.testing.assert_close(only.y, full.y)

import pytest

from stbench import UserError
from stbench.budgets import Compression, Retention, parse_compressions, parse_retentions


def test_paper_splits_and_sizes():
    assert Compression(0.005).bidimensional_split() == (0.1, 0.05)
    assert Compression(0.01).bidimensional_split() == (0.1, 0.1)
    assert Compression(0.005).sizes(1196, 207, bidimensional=True) == (120, 10)   # the reference's LOS-LOOP sizes
    assert Compression(0.005).sizes(1196, 207, bidimensional=False) == (6, 207)


def test_explicit_split_is_parsed_and_checked():
    (b,) = parse_compressions("0.005=0.05x0.1")
    assert (b.temporal, b.spatial) == (0.05, 0.1)
    with pytest.raises(UserError, match="does not multiply"):
        parse_compressions("0.005=0.1x0.1")


@pytest.mark.parametrize("text", ["1.5", "0", "-0.1", "abc"])
def test_impossible_ratios_are_rejected(text):
    with pytest.raises(UserError):
        parse_compressions(text)
    with pytest.raises(UserError):
        parse_retentions(text)


def test_budget_below_one_window_is_rejected():
    with pytest.raises(UserError, match="keeps 0 windows"):
        Compression(0.001).sizes(100, 10, bidimensional=False)
    with pytest.raises(UserError, match="0 locations"):
        Compression(0.005).sizes(1000, 5, bidimensional=True)


def test_retention_label():
    assert Retention(0.3).label == "r=30%"

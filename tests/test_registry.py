import pytest

from stbench.plugins import load_builtin
from stbench.registry import METHODS, Registry, UnknownName


def test_register_and_select_by_name_family_and_all():
    reg = Registry("things")
    reg.register("a", family="x")(object)
    reg.register("b", family="y")(int)
    reg.register("c", family="x")(str)
    assert reg.select("all") == ["a", "b", "c"]
    assert reg.select("x") == ["a", "c"]
    assert reg.select("b,x") == ["b", "a", "c"]
    with pytest.raises(ValueError, match="duplicate"):
        reg.register("a")(float)


def test_unknown_name_suggests_close_matches():
    load_builtin()
    with pytest.raises(UnknownName, match="did you mean random"):
        METHODS.select("randon")


def test_builtin_methods_are_registered():
    load_builtin()
    assert {"full", "random", "soft-random"} <= set(METHODS.names())
    assert METHODS.entry("soft-random").family == "pruning"

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


def test_third_party_methods_plug_in_through_entry_points(monkeypatch, tmp_path):
    import importlib

    import stbench.registry as registry_module
    (tmp_path / "stbench_test_plugin.py").write_text(
        "from stbench.registry import METHODS\n"
        "@METHODS.register('my-method', family='mine')\n"
        "class Mine:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = Registry("methods")
    monkeypatch.setattr(registry_module, "METHODS", fresh)

    class FakeEntryPoint:  # what importlib.metadata returns for an installed plugin package
        def load(self):
            return importlib.import_module("stbench_test_plugin")

    monkeypatch.setattr(registry_module, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == "stbench.methods" else [])
    assert fresh.names() == ["my-method"]          # listing loads the plugins first
    assert fresh.select("mine") == ["my-method"]

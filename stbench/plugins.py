"""Import every built-in method module so their decorators register them.

Every module under the ``baselines`` and ``methods`` packages is imported: adding a method is one new
file with a ``@METHODS.register`` decorator. Third-party packages use entry points (see registry.py).
"""
from __future__ import annotations

import importlib
import pkgutil

_LOADED = False


def load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    import stbench.data.datasets  # noqa: F401  (registers datasets)
    import stbench.models  # noqa: F401  (registers models)
    for package_name in ("baselines", "methods"):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            importlib.import_module(info.name)
    _LOADED = True

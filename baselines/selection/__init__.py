"""Static selection baselines of the ST-Prune paper (Appendix A.2, DeepCore-style, adapted to forecasting).

Each selector is a ``Pruner`` whose subset of round(r * n) training windows is fixed once in ``start``
(like ``hard-random``) and visited every epoch with unit weights. Most train a proxy model first
(``proxy.py``); everything they do happens in ``start``, so the harness meters it as the run's
``condense`` phase, and ``report()`` adds a breakdown (``selection_info``). Every module here
registers itself on import; ``proxy.py`` holds the shared helpers.
"""

"""The engine of one run: build it, train, score the pool, acquire, evaluate, save.

May import ``utils.runs``, the leaves (``config``, ``errors``, ``io``) and the ``data``,
``heuristics`` and ``models`` packages; ``tests/test_layout.py`` holds it to that.
"""

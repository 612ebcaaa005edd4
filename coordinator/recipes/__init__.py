"""Recipes over etcd, one idea per module: a session (``session``), an election
(``election``) and many of them on one watch (``campaigns``), a resumable prefix watch
(``watch``), the fenced decision store (``store``) and its commit batcher (``batcher``),
the live set of cities (``registry``) and worker membership (``membership``).

Each recipe is etcd mechanics and knows nothing of solving; the worker composes them.
"""

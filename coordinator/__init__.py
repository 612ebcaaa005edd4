"""The dispatch coordinator: etcd recipes (session, election, fenced store, registry)
and the worker that composes them with solvers. See ``README.md``."""

__version__ = "0.1.0"

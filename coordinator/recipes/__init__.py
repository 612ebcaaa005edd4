"""Recipes over etcd: session, election, fenced store, city registry, membership.

Each recipe is etcd mechanics and knows nothing of solving; the worker composes them.
"""

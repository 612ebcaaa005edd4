"""Messages of the dispatch coordinator, generated from ``protos/*.proto``.

Regenerate with ``make protos`` (``python -m protos.build``); a test fails when the
generated modules are out of date with the ``.proto`` sources.
"""

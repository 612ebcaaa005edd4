"""A plugin module whose import fails, as a plugin with a missing dependency would."""

import dispatch_testsolvers_missing_dependency  # type: ignore[import-not-found]  # noqa: F401

Solver = None

"""Command-line entry points: ``dispatch-worker`` and ``dispatchctl``."""

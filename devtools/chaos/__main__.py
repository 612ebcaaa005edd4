"""``python -m devtools.chaos``: see ``devtools.chaos``."""

from __future__ import annotations

import signal
import sys

from devtools.chaos.config import from_args, parser
from devtools.chaos.harness import run


def main(argv: list[str] | None = None) -> int:
    p = parser()
    config = from_args(p, p.parse_args(argv))
    # SIGTERM behaves like Ctrl-C: stop, clean up, no orphaned workers or etcd servers
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run(config)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())

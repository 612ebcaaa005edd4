"""``dispatchctl``'s context object: the options, the namespace's keys, one lazy client.

It lives apart from ``coordinator/cli/ctl.py`` because ``dispatchctl`` also runs as
``python -m coordinator.cli.ctl``: that module is then ``__main__``, and a command module
importing it would load a second copy with a second ``Ctl`` class, which ``pass_ctl``
(it finds its object by class) would not match. Every command module imports this one
instead, and ``ctl.py`` only collects their commands.
"""

from __future__ import annotations

from typing import Any

import click

from coordinator.cli.common import connect
from coordinator.etcd import EtcdClient
from coordinator.keys import Keys

__all__ = ["CONTEXT", "Ctl", "pass_ctl"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Ctl:
    """What the group's options give every command: keys and, on first use, a client."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.keys = Keys(options["namespace"])
        self._client: EtcdClient | None = None

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = connect(self.options)
        return self._client


pass_ctl = click.make_pass_decorator(Ctl)

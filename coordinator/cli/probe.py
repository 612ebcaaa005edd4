"""A container health check that needs no ``grpc_health_probe``: asks a worker's admin
port whether it is SERVING and exits 0 only then. Light on purpose: it imports gRPC's
health stubs and nothing of the worker.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["main", "probe"]


def probe(address: str, service: str = "", timeout: float = 2.0) -> tuple[bool, str]:
    """Ask the health service at ``address`` (``host:port``) whether it is SERVING.

    For container health checks where ``grpc_health_probe`` is not installed.
    """
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"{address}: {exc.code().name}: {exc.details()}"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {name}"


def main(argv: list[str] | None = None) -> int:
    """``python -m coordinator.cli.probe HOST:PORT [SERVICE]``: exit 0 when SERVING."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m coordinator.cli.probe HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    serving, message = probe(args[0], args[1] if len(args) == 2 else "")
    print(message, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    raise SystemExit(main())

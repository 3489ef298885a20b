"""``python -m tailmark.deploy.healthcheck [HOST:PORT]``: one grpc.health.v1 Check; exit 0 only when SERVING.

The images' HEALTHCHECK runs it inside the server container; a server on another port needs the address as
the argument or in ``TAILMARK_HEALTH_TARGET`` (podman 4.3 does not hand ``run -e`` variables to the check: pass
the argument there). The same bytes are Triton's health service, so it also probes a Triton endpoint.
Kubernetes needs no copy of it: the kubelet has its own gRPC probe (``readinessProbe.grpc``).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from tailmark.protos import inference_pb2 as pb
from tailmark.protos.service import HEALTH_CHECK


def check(target: str, service: str = "", timeout_s: float = 3.0) -> str:
    """The served status's name (SERVING, NOT_SERVING, ...); raises grpc.RpcError when there is no answer."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            HEALTH_CHECK.path,
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        reply = call(pb.HealthCheckRequest(service=service), timeout=timeout_s)
    return pb.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tailmark.deploy.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument(
        "target",
        nargs="?",
        default=os.environ.get("TAILMARK_HEALTH_TARGET", "127.0.0.1:8001"),
        help="gRPC address (default: $TAILMARK_HEALTH_TARGET, else 127.0.0.1:8001)",
    )
    parser.add_argument("--service", default="", help='service to ask about (default "": the whole server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    args = parser.parse_args(argv)
    try:
        status = check(args.target, args.service, args.timeout)
    except grpc.RpcError as exc:
        print(f"healthcheck: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"healthcheck: {args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())

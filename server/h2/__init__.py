"""A lean gRPC-over-HTTP/2 frontend on asyncio (``--grpc-stack h2``).

grpc.aio spends most of a unary call's server CPU in its own layers; this frontend speaks just the
part of HTTP/2 and gRPC that KServe-v2 clients use (unary and bidirectional-stream calls, flow
control, TLS with ALPN, deadlines) straight from an ``asyncio.Protocol``, and hands messages to the
same ``InferenceCore`` as the other stacks.
"""

"""Errors the client raises, one tree, translated from grpc at the transport boundary.

TailmarkError
├── ConfigError                 bad settings, flags or YAML: refused at parse time
├── TraceError                  a trace or timestamp file that cannot be replayed
└── TransportError              the endpoint failed us
    ├── Unreachable             no connection to the target
    ├── ModelNotFound           the target does not serve that model/version
    ├── TlsError                TLS handshake failed (wrong CA, cert or plain-text peer)
    └── ServerRejected          any other non-OK status on a control RPC
"""

from __future__ import annotations


class TailmarkError(Exception):
    """Something the user can act on; printed as one line."""


class ConfigError(TailmarkError):
    """Settings were refused (the message says which one and why)."""


class TraceError(TailmarkError):
    """A trace or timestamp file could not be read."""


class TransportError(TailmarkError):
    """The endpoint failed a control request (metadata, config, health)."""


class Unreachable(TransportError):
    """No connection could be made to the target."""


class ModelNotFound(TransportError):
    """The target answered NOT_FOUND for the model."""


class TlsError(TransportError):
    """The TLS handshake with the target failed."""


class ServerRejected(TransportError):
    """The target answered a control request with another error status."""

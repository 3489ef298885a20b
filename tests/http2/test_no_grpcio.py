"""The h2 path (server frontend, client transport, the HTTP/2 and gRPC wire packages) runs without grpcio."""

from __future__ import annotations

import subprocess
import sys


def test_h2_path_never_imports_grpcio():
    code = (
        "import sys\n"
        "import tailmark.server.h2.server, tailmark.client.h2_transport, tailmark.server.cli\n"
        "import tailmark.http2.connection, tailmark.grpc_wire.messages, tailmark.grpc_wire.metadata\n"
        "print(sorted(name for name in sys.modules if name == 'grpc' or name.startswith('grpc.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout

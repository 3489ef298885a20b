"""Start a real ``tailmark serve`` process on a free loopback port, and stop it.

The same launcher the client's built-in default uses, started at construction so tests can also hold
it without a ``with`` block.
"""

from __future__ import annotations

from pathlib import Path

from tailmark.client.embedded import EmbeddedServer


class ServerProcess(EmbeddedServer):
    def __init__(self, repository: Path | None, *extra: str, startup_timeout_s: float = 60.0) -> None:
        super().__init__(repository, *extra, startup_timeout_s=startup_timeout_s)
        self.__enter__()

    @property
    def lines(self) -> list[str]:
        return list(self.tail)

    @property
    def port(self) -> int:
        return int(self.target.rsplit(":", 1)[1])

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        return self.stop(timeout_s)

    @property
    def rest_address(self) -> str:
        """``host:port`` of the REST frontend (``--http-port``), as the server prints it."""
        line = next(line for line in self.lines if "REST on http://" in line)
        return line.split("REST on http://", 1)[1].split()[0]

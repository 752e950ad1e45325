"""A local SMTP server on loopback that stores what it receives as .eml files.

The demo's stand-in for an ESP's SMTP endpoint (and handy for trying `personalize deliver`):

    with MaildirSink(Path("outbox")) as smtp:      # listens on 127.0.0.1, a free port
        ... deliver to smtp.host:smtp.port ...

Each accepted message is written as <n>-<Message-ID>.eml exactly as received.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class _Store:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        content: bytes = envelope.original_content or envelope.content
        match = re.search(rb"^Message-ID:\s*<?([^>\r\n]+)", content, re.MULTILINE | re.IGNORECASE)
        name = _SAFE.sub("_", match.group(1).decode(errors="replace"))[:80] if match else "message"
        (self.dir / f"{self.count:05d}-{name}.eml").write_bytes(content)
        return "250 OK"


class MaildirSink:
    """aiosmtpd on 127.0.0.1:<free port>, saving messages under `directory`."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.dir = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self._store = _Store(self.dir)
        self._controller: Any = None

    @property
    def received(self) -> int:
        """Messages stored so far."""
        return self._store.count

    def __enter__(self) -> MaildirSink:
        from aiosmtpd.controller import Controller

        # aiosmtpd logs every SMTP command at INFO, recipient addresses included: keep
        # personal data (and five lines per email) out of the logs.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

        self.dir.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(self._store, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

"""Starting an aiohttp application on a host and port, with the testbed's errors.

For the servers that speak HTTP (the LLM emulator): a busy
port or another bind failure becomes a one-line :class:`ConnectError`, and
port 0 reports the port the system picked.
"""

from __future__ import annotations

import errno
import logging

from aiohttp import web

from agent.errors import ConnectError

__all__ = ["start_site"]


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    access_log: logging.Logger | None = None,
    busy_hint: str = "",
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; returns the runner (``cleanup()`` stops it) and the port."""
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            hint = f" ({busy_hint})" if busy_hint else ""
            raise ConnectError(f"cannot listen on {host}:{port}: port is busy{hint}") from None
        raise ConnectError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return runner, runner.addresses[0][1] if port == 0 else port

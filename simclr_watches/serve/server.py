"""Running the app: bind a socket (the port is known before serving, even port 0), then uvicorn on it."""

from __future__ import annotations

import ipaddress
import socket

from fastapi import FastAPI


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one; see ``getsockname()``).

    Raises:
        OSError: the address cannot be resolved or bound (in use, not this machine's, ...).
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                   for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, ValueError):
        return False


def page_url(sock: socket.socket, token: str | None = None) -> str:
    """The address of the page served on ``sock``; with ``token`` in its fragment (never sent to a server)."""
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"#token={token}" if token else "")


def run(app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
    """Serves ``app`` on ``sock`` with uvicorn until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])

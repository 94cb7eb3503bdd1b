"""CURVE encryption and per-client authentication for the driver protocol.

A server holds one key pair and an allow-list of client public keys; each client holds its own
key pair and the server's public key. A ZAP authenticator (pyzmq's `ThreadAuthenticator`)
checks every connecting client's key against the allow-list; a client whose key is not listed
never completes the handshake and gets nothing. Keys are Z85 text, in ZeroMQ certificate files
(``NAME.key`` public, ``NAME.key_secret`` secret) as `generate_keys` writes them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerKeys:
    """The server's key pair and the public keys of the clients it lets in."""

    public_key: bytes
    secret_key: bytes
    allowed_clients: frozenset[bytes]

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike, allowed: Iterable[str | os.PathLike]):
        """Keys from ``secret_file`` and the public key files (or folders of them) ``allowed``."""
        public, secret = load_keypair(secret_file)
        keys: set[bytes] = set()
        for path in map(Path, allowed):
            files = sorted(path.glob("*.key")) if path.is_dir() else [path]
            keys.update(load_public_key(f) for f in files)
        return cls(public, secret, frozenset(keys))


@dataclass(frozen=True)
class ClientKeys:
    """A client's key pair and the public key of the server it trusts."""

    public_key: bytes
    secret_key: bytes
    server_public_key: bytes

    @classmethod
    def from_files(
        cls, secret_file: str | os.PathLike, server_public_file: str | os.PathLike
    ) -> ClientKeys:
        public, secret = load_keypair(secret_file)
        return cls(public, secret, load_public_key(server_public_file))


def generate_keys(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Write a key pair ``NAME.key`` / ``NAME.key_secret`` per name; returns the files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        for existing in (directory / f"{name}.key", directory / f"{name}.key_secret"):
            if existing.exists():
                raise FileExistsError(f"{existing} exists; refusing to overwrite a key")
        public, secret = zmq.auth.create_certificates(directory, name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
    return written


def load_public_key(path: str | os.PathLike) -> bytes:
    """The Z85 public key in a certificate file (public or secret)."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a ZeroMQ certificate ({exc})") from exc
    return public


def load_keypair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """The Z85 (public, secret) key pair in a ``.key_secret`` certificate file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a ZeroMQ certificate ({exc})") from exc
    if secret is None:
        raise ValueError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


class _AllowList:
    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys
        if not allowed:
            log.warning("refused a client with public key %s", key.decode(errors="replace"))
        return allowed


def start_authenticator(context: zmq.Context, keys: ServerKeys) -> ThreadAuthenticator:
    """A running ZAP authenticator on ``context`` that admits only ``keys.allowed_clients``."""
    auth = ThreadAuthenticator(context, log=log)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(keys.allowed_clients))
    return auth


def secure_server_socket(socket: zmq.Socket, keys: ServerKeys) -> None:
    socket.curve_secretkey = keys.secret_key
    socket.curve_publickey = keys.public_key
    socket.curve_server = True


class ServingSocket:
    """A socket of ``kind`` (``zmq.PUB``, ``zmq.ROUTER``...) in a context of its own, bound
    at ``address`` (port 0 picks a free one: read `address`); with ``keys``, CURVE and an
    authenticator admitting only the listed clients. Linger 0 and ``max_message_bytes`` (when
    given) are set before binding. A failed bind is a `ValueError` naming ``what`` and the
    address. `close` releases the socket, the authenticator and the context."""

    def __init__(
        self,
        kind: int,
        address: str,
        *,
        what: str,
        keys: ServerKeys | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self._context = zmq.Context()
        self._auth = start_authenticator(self._context, keys) if keys is not None else None
        self.socket = self._context.socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        if max_message_bytes is not None:
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if keys is not None:
            secure_server_socket(self.socket, keys)
        try:
            self.socket.bind(address)
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(f"cannot {what} on {address}: {exc}") from None
        self.address: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def close(self) -> None:
        self.socket.close()
        if self._auth is not None:
            self._auth.stop()
        self._context.term()


def secure_client_socket(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.secret_key
    socket.curve_publickey = keys.public_key
    socket.curve_serverkey = keys.server_public_key

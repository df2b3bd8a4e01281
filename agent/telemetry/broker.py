"""The broker a ``--mqtt`` URL names: ``mqtt[s]://[user:pass@]host[:port][/prefix]``."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.errors import ConfigError

__all__ = ["DEFAULT_PREFIX", "BrokerUrl", "TlsOptions", "parse_broker_url"]

#: Topic prefix when the URL has no path.
DEFAULT_PREFIX = "vlt"
_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """``mqtts://`` settings: which CA to trust, an optional client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Accept any server certificate (self-signed, wrong name): encrypted, not authenticated.
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """An SSL context for the client side (bad files are a :class:`ConfigError`)."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"MQTT TLS files: {exc}") from None
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: None: plain TCP (``mqtt://``).
    tls: TlsOptions | None = None

    @property
    def display(self) -> str:
        """The URL without the password, for logs and manifests."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}/{self.prefix}"


def parse_broker_url(text: str, tls: TlsOptions | None = None) -> BrokerUrl:
    """Parse ``--mqtt``; ``tls`` applies to ``mqtts://`` (TLS options with ``mqtt://`` are an error)."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        raise ConfigError(f"--mqtt: expected mqtt://host[:port][/prefix] or mqtts://…, got {text!r}")
    if not parts.hostname:
        raise ConfigError(f"--mqtt: no broker host in {text!r}")
    try:
        port = parts.port or _PORTS[scheme]
    except ValueError:
        raise ConfigError(f"--mqtt: bad port in {text!r}") from None
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#") or any(not p for p in prefix.split("/")):
        raise ConfigError(f"--mqtt: topic prefix {prefix!r} may not contain +, # or empty levels")
    if scheme == "mqtt" and tls is not None and tls != TlsOptions():
        raise ConfigError("--mqtt-ca/--mqtt-cert/--mqtt-key/--mqtt-insecure need an mqtts:// URL")
    return BrokerUrl(
        host=parts.hostname,
        port=port,
        prefix=prefix,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=(tls or TlsOptions()) if scheme == "mqtts" else None,
    )

"""Transports, chosen by URL: ``memory://`` (in-process) or ``amqp://...`` (RabbitMQ)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sagakit.ports import Transport


def open_transport(url: str) -> Transport:
    """``memory://``, or ``amqp[s]://user:pass@host:port/vhost?prefix=...`` where the
    optional ``prefix`` goes before every queue and exchange name."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from sagakit.transports.memory import MemoryTransport

        return MemoryTransport()
    if scheme in {"amqp", "amqps"}:
        from sagakit.transports.rabbitmq import RabbitTransport

        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = next((value for key, value in query if key == "prefix"), "")
        rest = urlencode([(key, value) for key, value in query if key != "prefix"])
        return RabbitTransport(urlunsplit(parts._replace(query=rest)), prefix=prefix)
    raise ValueError(f"unsupported transport URL {url!r}: use memory:// or amqp://")


__all__ = ["open_transport"]

"""Transports, chosen by URL: ``memory://`` (in-process) or ``amqp://...`` (RabbitMQ)."""

from __future__ import annotations

from sagakit.ports import Transport


def open_transport(url: str) -> Transport:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from sagakit.transports.memory import MemoryTransport

        return MemoryTransport()
    raise ValueError(f"unsupported transport URL {url!r}: use memory://")


__all__ = ["open_transport"]

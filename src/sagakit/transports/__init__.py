"""Transports, chosen by URL: ``memory://`` (in-process) or ``amqp://...`` (RabbitMQ)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sagakit.observe.redaction import mask_urls
from sagakit.ports import Transport

#: Query options sagakit reads itself; any other goes to the driver.
_OURS = ("prefix", "retry_tiers", "max_deliveries", "bundle_max", "unbundled")


def _options(query: list[tuple[str, str]], url: str) -> dict[str, Any]:
    given = dict(query)
    options: dict[str, Any] = {}
    try:
        if "retry_tiers" in given:
            options["retry_tiers"] = tuple(float(t) for t in given["retry_tiers"].split(","))
        for whole in ("max_deliveries", "bundle_max"):
            if whole in given:
                options[whole] = int(given[whole])
    except ValueError as exc:
        raise ValueError(
            f"transport URL {mask_urls(url)!r}: retry_tiers is seconds separated by commas "
            "(e.g. 1,5,30), max_deliveries and bundle_max whole numbers"
        ) from exc
    if "prefix" in given:
        options["prefix"] = given["prefix"]
    if given.get("unbundled"):
        options["unbundled"] = tuple(given["unbundled"].split(","))
    return options


def open_transport(url: str) -> Transport:
    """``memory://``, or ``amqp[s]://user:pass@host:port/vhost?prefix=...`` where the
    optional ``prefix`` goes before every queue and exchange name. Both take
    ``retry_tiers=1,5,30`` (seconds before each redelivery of a failed message) and
    ``max_deliveries=6``; RabbitMQ also ``bundle_max=256`` (messages for one queue
    published together travel as one broker message of at most that many; 1 sends each
    on its own) and ``unbundled=queue,queue`` (queues whose messages always travel
    alone: those served by a consumer that reads only plain messages)."""
    scheme = url.split(":", 1)[0].lower()
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = _options(query, url)
    if scheme == "memory":
        from sagakit.transports.memory import MemoryTransport

        options.pop("prefix", None)
        options.pop("bundle_max", None)
        options.pop("unbundled", None)
        return MemoryTransport(**options)
    if scheme in {"amqp", "amqps"}:
        from sagakit.transports.rabbitmq import RabbitTransport

        rest = urlencode([(key, value) for key, value in query if key not in _OURS])
        return RabbitTransport(urlunsplit(parts._replace(query=rest)), **options)
    raise ValueError(f"unsupported transport URL {mask_urls(url)!r}: use memory:// or amqp://")


__all__ = ["open_transport"]

"""Logs that read like the story of each saga.

Library code logs through :func:`get_logger`: structlog bound loggers over the standard
``logging`` module. Each line reaches ``logging`` as a plain message with its context
(``saga_id``, ``step``, ``service``) as record attributes, so an application's own
logging setup shows it as it shows everything else. Entry points call :func:`configure`
to choose how sagakit's lines look: ``story`` (coloured, one prefix per service, for
people), ``json`` (one object per line, for machines) or ``quiet``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from opentelemetry import trace

from sagakit.observe.redaction import log_processor

Mode = Literal["story", "json", "quiet"]


def add_trace_id(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Put the current span's trace id on the line (unless the caller bound one from
    the message it handles), so logs and traces of one order can be joined."""
    if event_dict.get("trace_id") is None:
        event_dict.pop("trace_id", None)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict["trace_id"] = format(context.trace_id, "032x")
    return event_dict


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    add_trace_id,
    log_processor,  # hidden fields masked, control characters escaped
    structlog.stdlib.render_to_log_kwargs,
]

#: Record attributes of every LogRecord; anything else on a record is our context.
_CONTEXT = ("service", "saga_id", "step", "event_type", "trace_id")

_COLOURS = ["cyan", "magenta", "yellow", "blue", "green", "bright_red", "bright_cyan"]
_LEVEL_STYLE = {"warning": "yellow", "error": "bold red", "critical": "bold red"}


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger.bind(**context) if context else logger


class StoryRenderer:
    """``[payment] Charged $50.00 for order 102`` with one colour per service."""

    def __init__(self, *, colour: bool = True, show_ids: bool = False) -> None:
        self.colour = colour
        self.show_ids = show_ids
        self._assigned: dict[str, str] = {}

    def _style(self, who: str) -> str:
        if who not in self._assigned:
            self._assigned[who] = _COLOURS[len(self._assigned) % len(_COLOURS)]
        return self._assigned[who]

    def __call__(self, _logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
        from rich.text import Text

        who = str(event_dict.get("service") or event_dict.get("logger", "sagakit")).split(".")[-1]
        level = str(event_dict.get("level", "info"))
        text = Text()
        text.append(f"[{who}]", style=self._style(who) if self.colour else "")
        text.append(" ")
        text.append(str(event_dict.get("event", "")), style=_LEVEL_STYLE.get(level, ""))
        if self.show_ids and event_dict.get("saga_id"):
            text.append(f"  saga={event_dict['saga_id']}", style="dim")
        error = event_dict.get("exc_info") or event_dict.get("exception")
        if error and isinstance(error, str):
            text.append("\n" + error, style="red")
        if not self.colour:
            return text.plain
        from rich.console import Console

        console = Console(file=sys.stderr, force_terminal=True, color_system="standard")
        with console.capture() as capture:
            console.print(text, end="", soft_wrap=True)
        return capture.get()


def configure(
    mode: Mode = "story",
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    colour: bool | None = None,
    also: Iterable[str] = (),
) -> None:
    """Route sagakit's logs, and those of the loggers named in ``also`` (an
    application's own, such as the names its participants' ``service_log`` use), to
    ``stream`` in the chosen style."""
    target = stream or sys.stderr
    use_colour = target.isatty() if colour is None else colour
    renderer: Any
    if mode == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = StoryRenderer(colour=use_colour)
    handler = logging.StreamHandler(target)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.stdlib.ExtraAdder(allow=_CONTEXT),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    for name in ("sagakit", *also):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_sagakit", False):
                logger.removeHandler(old)
        handler._sagakit = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.CRITICAL + 1 if mode == "quiet" else level)
        logger.propagate = False

"""A chaos run told: the announcement, the live progress line, the final report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sagakit_shop.chaos.config import ChaosConfig
from sagakit_shop.chaos.harness import ChaosReport, Snapshot
from sagakit_shop.chaos.schedule import KINDS, Fault, counts

_TERMINAL = ("completed", "compensated", "needs_attention")


def announce(console: Console, config: ChaosConfig, schedule: list[Fault], command: str) -> None:
    planted = f", planted bug [bold red]{config.plant}[/]" if config.plant else ""
    load = f"{config.sagas} orders" if config.sagas else f"{config.seconds / 60:g} min of orders"
    console.print(
        f"[bold]sagakit chaos[/] run {config.run_id}: seed [bold]{config.seed}[/], "
        f"{config.mode}{planted}; {load} at {config.rate:g}/s"
    )
    console.print(f"reproduce: [bold]{command}[/]")
    console.print(f"databases {config.stem}_*, queues {config.prefix}*, logs {config.directory}")
    planned = ", ".join(f"{n} {kind}" for kind, n in counts(schedule).items() if n)
    wire = f"{config.duplicate:.0%} duplicated, {config.reorder:.0%} reordered deliveries"
    console.print(f"fault schedule ({planned or 'none'}; {wire}):")
    for fault in schedule:
        console.print(f"  {fault.describe()}", highlight=False)


def progress_line(snap: Snapshot) -> Text:
    s, load = snap.statuses, snap.load
    done = sum(s.get(k, 0) for k in _TERMINAL)
    running = s.get("running", 0) + s.get("compensating", 0)
    landed = " ".join(f"{kind} {snap.landed[kind]}" for kind in KINDS if snap.landed[kind])
    now = "; ".join(snap.active) or "-"
    line = (
        f"{snap.elapsed:6.0f}s {snap.phase:<12} placed {load.placed}"
        f" (not {sum(load.failed.values())}) | done {done}: ok {s.get('completed', 0)}"
        f" undone {s.get('compensated', 0)} attention {s.get('needs_attention', 0)}"
        f" | in flight {running} | faults {landed or '-'} | now: {now}"
    )
    return Text(line)


def as_json(report: ChaosReport, command: str) -> dict[str, Any]:
    config = report.config
    findings = report.findings.as_json() if report.findings else None
    return {
        "ok": report.ok,
        "seed": config.seed,
        "mode": config.mode,
        "plant": config.plant,
        "command": command,
        "run": {"id": config.run_id, "databases": config.stem, "queue_prefix": config.prefix},
        "elapsed_s": round(report.elapsed, 1),
        "load": report.load.as_json(),
        "sagas": findings["sagas"] if findings else {},
        "faults": {
            "planned": counts(report.schedule),
            "landed": {kind: report.landed[kind] for kind in KINDS},
            "wire": report.wire,
        },
        "restarts": report.restarts,
        "settled_in_s": round(report.settled_in, 1) if report.settled_in is not None else None,
        "settle_bound_s": config.settle,
        "drained": report.drained,
        "checks": findings,
        "healed": report.healed,
        "error": report.error,
        "schedule": [s.as_json() for s in report.struck],
        "logs": str(config.directory),
    }


def render(console: Console, report: ChaosReport) -> None:
    config, load = report.config, report.load
    table = Table(title="chaos run", title_justify="left", show_header=False)
    table.add_row("seed / mode", f"{config.seed} / {config.mode}")
    if config.plant:
        table.add_row("planted bug", f"[bold red]{config.plant}[/]")
    placed = f"{load.placed} in {load.seconds:.0f}s ({load.placed / max(load.seconds, 1):.1f}/s)"
    table.add_row("orders placed", placed)
    if load.failed:
        table.add_row("not placed", ", ".join(f"{n} {why}" for why, n in load.failed.items()))
    if report.findings:
        sagas = report.findings.sagas
        table.add_row("sagas", ", ".join(f"{n} {status}" for status, n in sorted(sagas.items())))
        if report.findings.gave_up:
            table.add_row("gave up (timeouts)", str(report.findings.gave_up))
        held = report.findings.held_for_undone
        outside = f"{report.findings.authorizations} authorizations"
        if held:
            outside += f"; {len(held)} still held for undone orders payment never recorded"
        table.add_row("at the gateway", outside)
    table.add_row("faults landed", _landed(report))
    if report.wire:
        w = report.wire
        wire = f"{w.get('duplicated', 0)} duplicated, {w.get('reordered', 0)} reordered"
        table.add_row("on the wire", f"{wire} of {w.get('published', 0)} published")
    table.add_row("restarts", ", ".join(f"{k} {v}" for k, v in report.restarts.items() if v))
    settled = "never" if report.settled_in is None else f"{report.settled_in:.1f}s"
    table.add_row("all terminal after heal", f"{settled} (bound {config.settle:.0f}s)")
    table.add_row("elapsed", f"{report.elapsed:.0f}s")
    console.print(table)
    if report.findings is not None:
        _render_checks(console, report)
    if report.error:
        console.print(f"[bold red]the run broke off:[/] {report.error}")
    verdict = "[bold green]0 violations[/]" if report.ok else "[bold red]VIOLATIONS FOUND[/]"
    console.print(f"{verdict}   logs: {config.directory}")


def _landed(report: ChaosReport) -> str:
    planned = counts(report.schedule)
    return ", ".join(
        f"{report.landed[kind]}/{planned[kind]} {kind}" for kind in KINDS if planned[kind]
    )


def _render_checks(console: Console, report: ChaosReport) -> None:
    assert report.findings is not None
    checks = Table(title="checks", title_justify="left", show_header=False)
    for name, holds in report.findings.holds().items():
        found = report.findings.violations[name]
        mark = "[green]holds[/]" if holds else f"[bold red]VIOLATED ({len(found)})[/]"
        checks.add_row(name, mark, "; ".join(found[:3]))
    console.print(checks)

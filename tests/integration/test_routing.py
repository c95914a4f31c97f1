"""Routing rules in a running system: pinned per saga, changed mid-run, approved by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from sagakit import Participant, StepContext
from sagakit.cli.app import app
from sagakit.engine.rules import RuleSet, publish
from sagakit.testing import SagaHarness
from tests.sagas import CHECKOUT, CHECKOUT_RULES


async def cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(
        CliRunner().invoke, app, list(args), env={"COLUMNS": "200", "USER": "alice"}
    )
    return result.exit_code, result.output


def participants(harness: SagaHarness, done: list[str]) -> list[Participant]:
    made = []
    for name, commands in {
        "fraud": ("screen", "clear"),
        "payment": ("charge", "refund"),
        "shipping": ("ship",),
    }.items():
        participant = Participant(name, harness.store, clock=harness.clock)
        for command in commands:

            async def handler(ctx: StepContext, what: str = f"{name}.{command}") -> None:
                done.append(f"{ctx.saga_id}:{what}")

            participant.on(command, handler)
        made.append(participant)
    return made


async def test_rules_are_pinned_when_a_saga_starts_and_approvals_come_from_people() -> None:
    done: list[str] = []
    harness = SagaHarness([CHECKOUT])
    harness.add(*participants(harness, done))
    async with harness as h:
        async with h.store.unit() as unit:
            await publish(unit, RuleSet.parse(CHECKOUT_RULES, definition=CHECKOUT))
        large = {"vip": False, "amount": 5000}
        waiting = await h.start("checkout", large, saga_id="big-1")
        for _ in range(200):
            if (await h.state(waiting)).steps.get("manual_approval"):
                break
            await asyncio.sleep(0.01)
        assert (await h.state(waiting)).steps["manual_approval"].status.value == "running"

        # The threshold goes up; sagas already running keep the rules they started with.
        relaxed = CHECKOUT_RULES.replace("version = 1", "version = 2").replace("> 1000", "> 100000")
        async with h.store.unit() as unit:
            await publish(unit, RuleSet.parse(relaxed, definition=CHECKOUT))
        h.orchestrator.rulebook.refresh = 0  # type: ignore[union-attr]
        through = await h.start("checkout", large, saga_id="big-2")
        vip = await h.start("checkout", {"vip": True, "amount": 10}, saga_id="vip-1")
        states = await h.run_until_terminal([through, vip])
        assert {s.status.value for s in states.values()} == {"completed"}
        assert states[through].rules_version == 2
        assert "vip-1:fraud.screen" not in done  # the VIP skipped the check
        assert (await h.state(waiting)).status.value == "running"  # still pinned to v1

        code, out = await cli("approve", "big-1", "--db", h.store.url, "--note", "known customer")
        assert code == 0, out
        assert "approve done" in out
        [state] = (await h.run_until_terminal([waiting])).values()
        assert state.status.value == "completed"
        assert state.data["manual_approval_by"] == "alice"

        rejected = await h.start("checkout", {"vip": False, "amount": 10**6}, saga_id="big-3")
        for _ in range(200):
            if (await h.state(rejected)).steps.get("manual_approval"):
                break
            await asyncio.sleep(0.01)
        code, out = await cli("reject", "big-3", "--db", h.store.url, "--note", "looks like fraud")
        assert code == 0, out
        [state] = (await h.run_until_terminal([rejected])).values()
        assert state.status.value == "compensated"
        assert state.reason == "manual_approval failed: rejected by alice: looks like fraud"
        assert "big-3:fraud.clear" in done
        assert not any(d.startswith("big-3:payment") for d in done)


async def test_rules_check_validates_and_dry_runs(tmp_path: Path) -> None:
    good = tmp_path / "checkout.toml"
    good.write_text(CHECKOUT_RULES)
    code, out = await cli("rules", "check", str(good), "--definition", "tests.sagas:CHECKOUT")
    assert code == 0, out
    assert "valid: 2 rule(s) for saga 'checkout', version 1" in out
    assert "sample: a large order" in out and "large orders wait for a person" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(CHECKOUT_RULES.replace('"data.vip"', '"data.vip &&"'))
    code, out = await cli("rules", "check", str(bad), "--definition", "tests.sagas:CHECKOUT")
    assert code == 1
    assert f"{bad}:6:" in out and "does not parse" in out
    code, out = await cli("rules", "check", str(good), "--definition", "tests.sagas:NOPE")
    assert code == 2 and "--definition" in out

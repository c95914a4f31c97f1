"""The order saga: create, screen, (approve), reserve, charge, ship (the pivot), notify,
approve. Every step is typed: its models (``sagakit_shop.contracts``) say what it reads from
the saga's data and what it adds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sagakit import RetryPolicy, SagaDefinition, Step, StepKind, approval
from sagakit_shop.contracts import (
    ChargePayment,
    NotifyCustomer,
    OrderLine,
    OrderRef,
    PaymentCharged,
    ReserveStock,
    ScheduleShipment,
    ScreenCustomer,
    ShipmentScheduled,
    StockReserved,
)

_QUICK = RetryPolicy(attempts=3, backoff=timedelta(milliseconds=100), cap=timedelta(seconds=2))
_PATIENT = RetryPolicy(attempts=None, backoff=timedelta(milliseconds=100), cap=timedelta(seconds=5))
# Steps that call an outside system (the gateway, the carrier) meet its failures before
# their breaker opens, and its half-open trials: more tries than a step of our own.
_OUTSIDE = RetryPolicy(attempts=8, backoff=timedelta(milliseconds=200), cap=timedelta(seconds=3))
_OUTSIDE_UNDO = RetryPolicy(
    attempts=16, backoff=timedelta(milliseconds=200), cap=timedelta(seconds=5)
)

ORDER_SAGA = SagaDefinition(
    "order",
    version=1,
    steps=[
        Step(
            name="create_order",
            participant="order",
            command="create",
            command_model=OrderLine,
            compensation="reject",
            timeout=timedelta(seconds=10),
            retry=_QUICK,
        ),
        # Routing rules (shop/rules/order.toml) let VIPs skip the screening...
        Step(
            name="fraud_check",
            participant="payment",
            command="screen",
            command_model=ScreenCustomer,
            compensation="clear",
            timeout=timedelta(seconds=10),
            retry=_QUICK,
        ),
        # ...and make large orders wait for a person; without rules it is skipped.
        approval("manual_approval", optional=True, timeout=timedelta(hours=1)),
        Step(
            name="reserve_stock",
            participant="inventory",
            command="reserve",
            command_model=ReserveStock,
            reply_model=StockReserved,
            compensation="release",
            timeout=timedelta(seconds=10),
            retry=_QUICK,
        ),
        Step(
            name="charge_payment",
            participant="payment",
            command="charge",
            command_model=ChargePayment,
            reply_model=PaymentCharged,
            compensation="refund",
            timeout=timedelta(seconds=10),
            retry=_OUTSIDE,
            compensation_retry=_OUTSIDE_UNDO,
        ),
        Step(
            name="schedule_shipment",
            participant="shipping",
            command="schedule",
            command_model=ScheduleShipment,
            reply_model=ShipmentScheduled,
            kind=StepKind.PIVOT,
            timeout=timedelta(seconds=10),
            retry=_OUTSIDE,
        ),
        Step(
            name="notify_customer",
            participant="notification",
            command="notify",
            command_model=NotifyCustomer,
            kind=StepKind.RETRIABLE,
            timeout=timedelta(seconds=10),
            retry=_PATIENT,
        ),
        Step(
            name="approve_order",
            participant="order",
            command="approve",
            command_model=OrderRef,
            kind=StepKind.RETRIABLE,
            timeout=timedelta(seconds=10),
            retry=_PATIENT,
        ),
    ],
)


#: The shop's routing rules; publish them with ``sagakit rules publish`` (lab 10 does).
RULES_FILE = Path(__file__).parent / "rules" / "order.toml"

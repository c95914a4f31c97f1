"""Saga definitions shared by the tests."""

from __future__ import annotations

from datetime import timedelta

from sagakit import RetryPolicy, SagaDefinition, Step, StepKind, parallel
from sagakit.model.definition import approval

FAST = RetryPolicy(attempts=3, backoff=timedelta(milliseconds=10), cap=timedelta(milliseconds=50))

ORDER = SagaDefinition(
    "order",
    steps=[
        Step(
            name="reserve",
            participant="inventory",
            command="reserve",
            compensation="release",
            retry=FAST,
        ),
        Step(
            name="charge",
            participant="payment",
            command="charge",
            compensation="refund",
            retry=FAST,
        ),
        Step(name="ship", participant="shipping", command="ship", kind=StepKind.PIVOT, retry=FAST),
        Step(
            name="notify",
            participant="notification",
            command="send",
            kind=StepKind.RETRIABLE,
            retry=RetryPolicy(
                attempts=None, backoff=timedelta(milliseconds=10), cap=timedelta(milliseconds=100)
            ),
        ),
    ],
)

TRIP = SagaDefinition(
    "trip",
    steps=[
        Step(
            name="flight",
            participant="airline",
            command="reserve",
            compensation="cancel",
            retry=FAST,
        ),
        parallel(
            Step(
                name="hotel", participant="hotel", command="book", compensation="cancel", retry=FAST
            ),
            Step(name="car", participant="cars", command="rent", compensation="return", retry=FAST),
        ),
        Step(name="pay", participant="bank", command="charge", kind=StepKind.PIVOT, retry=FAST),
    ],
)

#: A saga routed by rules: a fraud check that rules may skip, an approval they may require.
CHECKOUT = SagaDefinition(
    "checkout",
    steps=[
        Step(
            name="screen", participant="fraud", command="screen", compensation="clear", retry=FAST
        ),
        approval("manual_approval", optional=True, timeout=timedelta(hours=1)),
        Step(
            name="charge",
            participant="payment",
            command="charge",
            compensation="refund",
            retry=FAST,
        ),
        Step(name="ship", participant="shipping", command="ship", kind=StepKind.PIVOT, retry=FAST),
    ],
)

CHECKOUT_RULES = """\
saga = "checkout"
version = 1

[[rule]]
name = "VIPs skip the fraud check"
when = "data.vip"
skip = ["screen"]

[[rule]]
name = "large orders wait for a person"
when = "data.amount > 1000"
require = ["manual_approval"]

[[sample]]
name = "a VIP's small order"
data = { vip = true, amount = 20 }

[[sample]]
name = "a large order"
data = { vip = false, amount = 5000 }
"""

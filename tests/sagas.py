"""Saga definitions shared by the tests."""

from __future__ import annotations

from datetime import timedelta

from sagakit import RetryPolicy, SagaDefinition, Step, StepKind, parallel

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

"""The generative tests' handlers fail on purpose, hundreds of times a run: their log
lines would bury a failure's report, so sagakit's loggers keep quiet here."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def quiet_sagakit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="sagakit")

"""The generative test: random sagas on every runtime, checked against a model.

A seed generates a scenario (:mod:`.scenario`): two dozen sagas, each with a
definition of its own (one to eight steps, compensatable, pivot and retriable, some
optional or skipped by a routing rule) and, per step and per try, what its handler
does (:mod:`.behaviours`): succeed through ``ctx.write`` or ``ctx.connection``,
refuse, raise, run past its timeout, reply, or reply with something that is not JSON.
They all start at once on one runtime (:mod:`.runners`), with duplicated, delayed and
reordered messages where there is a transport, and the oracle (:mod:`.check`)
compares each saga's end, effects and data with what the reference model
(:mod:`.model`, written from the docs) says.

``make test`` runs a few seeds per runtime (test_generative.py); ``python -m
tests.generative run`` runs many more, shrinking each failure to a small case it can
replay. test_planted.py shows the check catching bugs planted on purpose.
"""

"""``sagakit chaos``: the distributed shop under a seeded nemesis, then the checks.

The shop runs as real processes over the real PostgreSQL and RabbitMQ, under a steady
order load, while the nemesis kills and pauses its processes, restarts the broker and
PostgreSQL, cuts a service off from its database, and duplicates and reorders messages
on the wire. Then it heals, drains, and checks what a user relies on. ``--plant``
switches off one guarantee on purpose, to show the checks catch it.

``harness.run_chaos`` runs one; ``config``, ``schedule``, ``footprint`` (its databases
and queues), ``processes`` (the shop's supervised processes), ``nemesis``, ``load``,
``checks`` and ``report`` are its parts; ``wire`` is what a service process loads (and
all it loads from here) when the harness asks it for wire faults.
"""

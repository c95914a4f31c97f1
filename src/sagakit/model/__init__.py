"""The pure model of a saga: values and functions, no I/O.

A definition, the messages on the wire, the events of a saga's log and the state that
is their fold, and ``decide`` (definition, state, trigger) -> events and commands. The
engine loads and stores these; nothing here touches a database, a clock or a network.
"""

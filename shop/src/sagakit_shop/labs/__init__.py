"""The saga labs: each replays one classic lesson on the shop's real pieces.

``sagakit lab list`` shows them; ``sagakit lab run N`` runs one as a story, and with
``--json`` prints its key figures as one JSON object instead.
"""

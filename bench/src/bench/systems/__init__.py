"""The systems under test: sagakit in its modes, the peers, and the raw limit."""

"""Seeing what sagas do: logs that tell each saga's story, OpenTelemetry spans,
Prometheus metrics, and personal data kept out of all three."""

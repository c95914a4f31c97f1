"""A concert booking service: the example of docs/own-service.md."""

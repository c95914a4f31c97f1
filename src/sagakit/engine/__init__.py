"""The engine: who decides, who runs a step, how a batch shares one transaction, and how
a process runs it all and stops. It reaches tables only through :mod:`sagakit.ports`."""

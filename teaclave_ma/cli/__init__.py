"""The ``teaclave-ma`` command line: one module per command group."""

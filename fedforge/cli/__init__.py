"""The ``fedforge`` command line: ``entry`` is the console script, ``main`` its testable core."""

from fedforge.cli.app import entry, main

__all__ = ["entry", "main"]

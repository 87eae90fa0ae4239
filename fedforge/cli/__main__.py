"""``python -m fedforge.cli``: the ``fedforge`` command."""

from fedforge.cli.app import entry

entry()

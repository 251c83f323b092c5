"""`bundle`: the builder's command line, one module per command group.

- ``context``: what every command shares (click settings, options object, output helpers);
- ``lock``, ``build`` (build, inspect), ``discover`` (images, check), ``keys``, ``verify``;
- ``app``: the group, command registration, and the one place errors become exit codes.
"""

from bundler.cli.app import cli, main

__all__ = ["cli", "main"]

"""The command line's subcommands, one module each: :mod:`~dnbook.cli.train`,
:mod:`~dnbook.cli.reproduce`, :mod:`~dnbook.cli.report`, :mod:`~dnbook.cli.complexity`,
:mod:`~dnbook.cli.claims`, :mod:`~dnbook.cli.bench` and :mod:`~dnbook.cli.speed`, each with
``add_parser(commands)`` and ``run(args) -> exit status``; what they share is in
:mod:`~dnbook.cli._common`. ``python -m dnbook`` (:mod:`dnbook.__main__`) puts them together.

A subcommand imports what it needs when it runs (inside ``run``), so that the start of every
command stays fast: the one place in dnbook where imports are made inside functions.
"""

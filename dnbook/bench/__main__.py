"""``python -m dnbook.bench``: the benchmark on its own, as ``python -m dnbook bench``."""

from dnbook.bench import main

raise SystemExit(main(prog="python -m dnbook.bench"))

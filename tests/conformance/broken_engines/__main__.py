"""``python -m tests.conformance.broken_engines BUG [dwf serve options]``

Introduces one bug (see ``__init__.py``; ``none`` for the reference itself), then
serves what ``dwf serve --conformance --memory`` serves, on 127.0.0.1 and the port
given (``--port 0``: a free one), and prints the same ``ready URL ...`` line.
"""

from __future__ import annotations

import sys

from . import BUGS, apply


def main(argv: list[str]) -> int:
    names = [*BUGS, "none"]
    if not argv or argv[0] not in names:
        print(f"usage: python -m tests.conformance.broken_engines {{{','.join(names)}}} [...]")
        return 2
    apply(argv[0])
    from durable_workflows.cli import main as dwf

    code: int = dwf(["serve", "--conformance", "--memory", "--host", "127.0.0.1", *argv[1:]])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

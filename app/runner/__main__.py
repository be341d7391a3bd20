"""`python -m app.runner SESSION_ID [--stage NAME]`: a detached runner's entry point."""

from __future__ import annotations

import sys


def main() -> int:
    from app.runner.entry import detached_main

    return detached_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

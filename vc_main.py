"""Where every `vc` process starts: the console script and the detached runner.

Our packages have common names (``app``, ``store``, ``widgets``): a web project's workspace
has an ``app/`` package of its own, and Python looks in the current directory and in
``PYTHONPATH`` before it looks where vc is installed. Resolved that way, the user's code
would run in place of ours. This module's name is vc's alone, so it is found where vc is
installed; before anything of ours is imported it makes those three names resolve from the
directory it was installed in, and nowhere else. Everything else (the standard library, the
dependencies) is found as usual.

A runner is started as ``python -E -P -m vc_main runner SESSION_ID [--stage NAME]``
(``app.runner.launch``): ``-P`` keeps the workspace, its working directory, off
``sys.path`` and ``-E`` ignores ``PYTHONPATH``; user site-packages stay (``-I`` would drop
them, and with them a ``pip install --user`` of vc).
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import ModuleSpec, PathFinder

#: The top-level packages of vc, resolved only from :data:`INSTALLED_IN`.
OWN_PACKAGES = frozenset({"app", "store", "widgets"})
#: The directory that holds this module and, beside it, our packages (site-packages, or the
#: project's directory for an editable install).
INSTALLED_IN = os.path.dirname(os.path.abspath(__file__))


class _OwnPackagesFinder:
    """A meta path finder ahead of every other: ``app``, ``store`` and ``widgets`` come from
    :data:`INSTALLED_IN`; their submodules follow from the packages' own ``__path__``."""

    @classmethod
    def find_spec(
        cls, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname not in OWN_PACKAGES:
            return None
        return PathFinder.find_spec(fullname, [INSTALLED_IN])


def pin_own_packages() -> None:
    """Make our packages resolve from where vc is installed (idempotent)."""
    if _OwnPackagesFinder not in sys.meta_path:
        sys.meta_path.insert(0, _OwnPackagesFinder)


def main() -> int:
    """The `vc` console script."""
    pin_own_packages()
    from app.main import main as cli_main

    return cli_main()


def _module_main(argv: list[str]) -> int:
    """``python -m vc_main runner SESSION_ID [--stage NAME]``: a detached runner."""
    pin_own_packages()
    if argv[:1] != ["runner"]:
        print("usage: python -m vc_main runner SESSION_ID [--stage NAME]", file=sys.stderr)
        return 2
    from app.runner.entry import detached_main

    return detached_main(argv[1:])


if __name__ == "__main__":
    sys.exit(_module_main(sys.argv[1:]))

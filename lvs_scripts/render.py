"""How commands and rules are shown to people: shell-quoted, in ipvsadm's canonical form."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(arg)) for arg in argv)

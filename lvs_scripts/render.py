"""How commands and rules are shown to people: shell-quoted, in ipvsadm's canonical form."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

# What shlex.quote leaves unquoted is a word of only these characters (its _find_unsafe).
_UNSAFE = re.compile(r"[^\w@%+=:,./-]", re.ASCII).search


def shell_line(argv: Sequence[str]) -> str:
    words = [str(arg) for arg in argv]
    # Nearly every argv (every ipvsadm rule) needs no quoting at all: one search over all
    # its words together says so, instead of a shlex.quote call per word. The same
    # text shlex.quote gives: a word is left as it is exactly when it is not empty and
    # has none of the unsafe characters, and the words joined have one iff a word has.
    if all(words) and _UNSAFE("".join(words)) is None:
        return " ".join(words)
    return " ".join(shlex.quote(word) for word in words)

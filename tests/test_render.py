"""render.shell_line: the same text as shlex.quote word by word, by a shorter way."""

from __future__ import annotations

import random
import shlex

import pytest

from lvs_scripts.render import shell_line

CASES = [
    (),
    ("ipvsadm", "-a", "-t", "10.200.0.1:80", "-r", "10.100.0.1:80", "-g", "-w", "1"),
    ("ipvsadm", "-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8::2]:80", "-g"),
    ("ip", "addr", "add", "10.0.0.1/32", "dev", "eth0", "label", "eth0:lvs"),
    ("sysctl", "-w", "net.ipv4.vs.expire_nodest_conn=1"),
    ("echo", ""),  # an empty word must show as ''
    ("", "x"),
    ("a b",),  # a space inside a word
    ("it's",),
    ("$HOME", "`id`", "a;b", "a|b", "a&b", "*", "~"),
    ("tab\there", "new\nline"),
    ("é",),  # not ASCII: shlex quotes it
    ("@%+=:,./-_",),  # every character shlex leaves alone
]


@pytest.mark.parametrize("argv", CASES)
def test_shell_line_is_shlex_quote_word_by_word(argv: tuple[str, ...]) -> None:
    assert shell_line(argv) == " ".join(shlex.quote(word) for word in argv)


def test_shell_line_agrees_with_shlex_on_random_words() -> None:
    rng = random.Random(14)
    alphabet = "ab1-_./:@%+=,[] '\"$;|&*?\\\té"
    for _ in range(2000):
        argv = tuple("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5)))
                     for _ in range(rng.randrange(0, 4)))
        assert shell_line(argv) == " ".join(shlex.quote(word) for word in argv), argv

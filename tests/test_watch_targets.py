"""watch.TargetCache: the targets of a reload equal targets_of, and the targets of what
the reload did not touch are the very objects of the last one (the checker takes those
back by identity: Checker.set_targets)."""

from __future__ import annotations

import pytest

from lvs_scripts.config_delta import parse, reparse
from lvs_scripts.watch import TargetCache, targets_of

PATH = "/etc/lvs/lvs.toml"


def config_text(weights: dict[int, int] | None = None, check: str = "tcp",
                extra: str = "") -> str:
    weights = weights or {}
    reals = "".join(f'  {{ address = "10.100.0.{n}", weight = {weights.get(n, 1)} }},\n'
                    for n in range(1, 30))
    return (f'[director]\ninterface = "eth0"\n\n'
            f'[[service]]\nvip = "10.200.0.1"\nport = 80\nreal = [\n{reals}]\n'
            f'[service.check]\ntype = "{check}"\n{extra}'
            '\n[[service]]\nvip = "10.200.0.2"\nport = 443\n'
            'real = [{ address = "10.100.1.1" }, { address = "10.100.1.2" }]\n'
            '[service.check]\ntype = "tcp"\n'
            '\n[[service]]\nvip = "10.200.0.3"\nport = 80\n'
            'real = [{ address = "10.100.2.1" }]\n')


# (the edited text, how many of the 31 targets must be the last reload's objects)
EDITS = [
    (config_text({5: 3}), 30),  # a weight: one target made again (its Destination is new)
    (config_text({5: 3, 29: 0}), 6),  # one edit from 5 to 29: those 25 read again
    (config_text(), 31),  # nothing changed: the same services
    # Parsed in full (not an edit of real servers): every object is new.
    (config_text(check="http"), 0),
    (config_text(extra="interval = 3\n"), 0),
    (config_text().replace('"10.100.0.7"', '"10.100.0.70"'), 0),
]


@pytest.mark.parametrize("text, kept", EDITS, ids=range(len(EDITS)))
def test_a_reload_gets_back_the_targets_it_did_not_touch(text: str, kept: int) -> None:
    cache = TargetCache()
    base = parse(config_text(), PATH)
    first = cache(base.config)
    assert first == targets_of(base.config) and len(first) == 31
    edited = reparse(base, text, PATH) or parse(text, PATH)
    again = cache(edited.config)
    assert again == targets_of(edited.config)
    by_key = {target.key: target for target in first}
    assert sum(by_key.get(target.key) is target for target in again) == kept


def test_a_service_gone_and_back_is_made_anew() -> None:
    cache = TargetCache()
    whole = parse(config_text(), PATH).config
    cache(whole)
    fewer = parse(config_text().split("\n[[service]]\nvip = \"10.200.0.2\"")[0], PATH).config
    assert cache(fewer) == targets_of(fewer)
    assert cache(whole) == targets_of(whole)


def test_the_same_real_servers_under_another_check_get_new_targets() -> None:
    """A Target carries its service's check: the same Destination objects under a changed
    check are not taken back."""
    from lvs_scripts.checks import CheckSpec
    from lvs_scripts.record import replaced

    cache = TargetCache()
    config = parse(config_text(), PATH).config
    cache(config)
    first = config.services[0]
    assert first.check is not None
    other = replaced(first, check=CheckSpec(type="tcp", interval=first.check.interval + 1))
    edited = replaced(config, services=(other, *config.services[1:]))
    again = cache(edited)
    assert again == targets_of(edited)
    assert {target.spec for target in again[:29]} == {other.check}

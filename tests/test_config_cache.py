"""The compiled-config cache (config_cache.py): taken only for the exact bytes, path and
code it was built from, ignored whenever it cannot be trusted or loaded, never holding
an invalid config, and never deciding what depends on the machine (--host)."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvs_scripts import config as config_module
from lvs_scripts import config_cache, config_delta, probes
from lvs_scripts.cli import director_main
from lvs_scripts.config import load_config, parse_config
from lvs_scripts.config_cache import MAGIC, ConfigCache
from lvs_scripts.errors import ConfigError
from lvs_scripts.locks import Paths
from tests.counting import count_calls
from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
LAB_HA = ROOT / "examples" / "lab-ha.toml"


def config_text(count: int, weight: int = 1) -> str:
    reals = ",\n".join(f'  {{ address = "10.100.{i // 250}.{i % 250 + 1}", weight = {weight} }}'
                       for i in range(count))
    return (f'[director]\ninterface = "eth0"\n\n[[service]]\nvip = "10.200.0.1"\nport = 80\n'
            f'real = [\n{reals}\n]\n')


class Files:
    """A config file and a state directory holding its cache."""

    def __init__(self, root: Path) -> None:
        self.config = root / "lvs.toml"
        self.state = root / "run"
        self.state.mkdir(mode=0o755)
        self.cache = Path(Paths("lvs-director", str(self.state)).config_cache)

    def load(self, store: bool = True) -> object:
        return load_config(str(self.config), str(self.cache), store=store)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    made = Files(tmp_path)
    made.config.write_text(config_text(2000))
    assert made.config.stat().st_size >= config_module.CACHE_MIN_BYTES
    return made


class _Forgetful(list[object]):
    """config_delta's memory of the last parse, in a test where each load is a new
    process: it remembers nothing."""

    def __setitem__(self, index: object, value: object) -> None:
        pass


@pytest.fixture(autouse=True)
def each_load_a_new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_delta, "_last", _Forgetful())


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each full parse that load_config runs, by path: a cache hit runs none, nor does an
    edit read from the text the cache keeps (config_delta)."""
    return count_calls(monkeypatch, config_delta, "parse", lambda _text, path: path)


def test_the_second_load_of_the_same_bytes_is_a_hit(files: Files, parses: list[str]) -> None:
    first = files.load()
    assert parses == [str(files.config)]
    assert stat.S_IMODE(files.cache.stat().st_mode) == 0o600  # whatever the umask
    again = files.load()
    assert parses == [str(files.config)]  # no second parse
    assert again == first == parse_config(config_text(2000), str(files.config))
    assert again.path == str(files.config)


@pytest.mark.parametrize("old, new, full_parses", [
    ("weight = 1 }", "weight = 7 }", 1),  # read from the text kept (config_delta)
    ('"10.100.0.1", weight = 1 }', '"10.100.9.1", weight = 7 }', 2),  # an address: all
])
def test_one_changed_byte_is_a_miss(files: Files, parses: list[str], old: str, new: str,
                                    full_parses: int) -> None:
    files.load()
    text = config_text(2000)
    changed = text.replace(old, new, 1)
    assert len(changed) == len(text)
    files.config.write_text(changed)
    os.utime(files.config, ns=(0, 0))  # not the mtime: the content decides
    config = files.load()
    assert len(parses) == full_parses
    assert config == parse_config(changed, str(files.config))
    assert config.services[0].destinations[0].weight == 7
    assert config.services[0].destinations[1].weight == 1
    assert files.load() == config
    assert len(parses) == full_parses  # and the new bytes are cached in turn


def test_the_same_bytes_at_another_path_is_a_miss(files: Files, parses: list[str]) -> None:
    files.load()
    other = files.config.with_name("other.toml")
    shutil.copy(files.config, other)
    config = load_config(str(other), str(files.cache))
    assert config.path == str(other)  # what its messages name
    assert len(parses) == 2


def test_other_code_is_a_miss(files: Files, parses: list[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    files.load()
    stamp = config_cache._code_stamp()
    monkeypatch.setattr(config_cache, "_code_stamp", lambda: stamp + b"\nconfig.py edited")
    files.load()
    assert len(parses) == 2


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(MAGIC) + 64 + 100],  # cut short, in the Config's pickle
    lambda data: data[:len(MAGIC) + 64] + b"\x80\x05garbage",  # the keys right, not the rest
    lambda data: data[:len(MAGIC) + 64] + pickle.dumps({"not": "a config"}),
    lambda data: data[:len(MAGIC) + 64],  # nothing after the keys
    lambda data: b"",
])
def test_a_damaged_cache_file_is_ignored_and_replaced(files: Files, parses: list[str],
                                                      damage: object) -> None:
    want = files.load()
    files.cache.write_bytes(damage(files.cache.read_bytes()))  # type: ignore[operator]
    assert files.load() == want
    assert len(parses) == 2
    assert files.load() == want  # rewritten: a hit again
    assert len(parses) == 2


def test_a_cache_of_another_path_is_not_taken(files: Files, parses: list[str]) -> None:
    """Even with a matching key, the Config inside must be of this path."""
    files.load()
    cache = ConfigCache(str(files.cache), str(files.config), files.config.read_bytes())
    assert cache.key is not None
    elsewhere = parse_config(config_text(2000), "/etc/elsewhere.toml")
    files.cache.write_bytes(MAGIC + cache.key + cache.base_key + pickle.dumps(elsewhere))
    assert files.load().path == str(files.config)
    assert len(parses) == 2


class Planted:
    """A pickle that would run code when loaded: it must never be."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.flag,))


@pytest.mark.parametrize("make_untrusted", ["group-writable", "other-owner", "symlink",
                                            "directory-writable"])
def test_an_untrusted_cache_is_never_unpickled(files: Files, parses: list[str],
                                              tmp_path: Path, make_untrusted: str) -> None:
    files.load()
    flag = tmp_path / "code-ran"
    cache = ConfigCache(str(files.cache), str(files.config), files.config.read_bytes())
    assert cache.key is not None
    planted = MAGIC + cache.key + cache.base_key + pickle.dumps(Planted(flag))
    files.cache.write_bytes(planted)
    if make_untrusted == "group-writable":
        files.cache.chmod(0o620)
    elif make_untrusted == "other-owner":
        os.chown(files.cache, 65534, 65534)
    elif make_untrusted == "symlink":
        target = tmp_path / "target"
        files.cache.rename(target)
        files.cache.symlink_to(target)
    else:
        files.state.chmod(0o777)
    config = files.load(store=False)
    assert not flag.exists()
    assert config.path == str(files.config)
    assert len(parses) == 2
    # The control: trusted, the same bytes would be loaded (and the code run).
    if make_untrusted in ("group-writable", "other-owner", "directory-writable"):
        files.state.chmod(0o755)
        files.cache.unlink()
        files.cache.write_bytes(planted)
        files.cache.chmod(0o600)
        files.load(store=False)
        assert flag.exists()


def test_an_invalid_config_is_never_cached(files: Files, parses: list[str]) -> None:
    files.config.write_text(config_text(2000).replace('"eth0"', '"eth/0"'))
    with pytest.raises(ConfigError) as first:
        files.load()
    assert not files.cache.exists()
    assert list(files.state.iterdir()) == []  # no temporary file left either
    with pytest.raises(ConfigError) as second:
        files.load()
    assert str(first.value) == str(second.value)
    assert len(parses) == 2


def test_errors_are_the_same_after_a_valid_config_was_cached(files: Files) -> None:
    """A cached config does not change what a broken edit of the file says."""
    files.load()
    broken = config_text(2000).replace("weight = 1 }", "weight = 70000 }", 1)
    files.config.write_text(broken)
    with pytest.raises(ConfigError) as cached:
        files.load()
    with pytest.raises(ConfigError) as plain:
        load_config(str(files.config))
    assert str(cached.value) == str(plain.value)
    assert (cached.value.key, cached.value.value) == ("service[0].real[0].weight", 70000)


def test_no_store_reads_but_does_not_write(files: Files, parses: list[str]) -> None:
    files.load(store=False)
    assert not files.cache.exists()
    files.load()
    files.load(store=False)
    assert len(parses) == 2  # store=False still took the cache


def test_keeping_a_parsed_config_can_wait_for_the_caller(files: Files,
                                                          parses: list[str]) -> None:
    """read_config hands back the store (the watcher does it after its reload has taken
    effect): nothing is written until it is called; after a hit there is nothing to do."""
    from lvs_scripts.config import read_config

    config, keep = read_config(str(files.config), str(files.cache))
    assert not files.cache.exists()
    keep()
    assert files.cache.exists()
    again, nothing = read_config(str(files.config), str(files.cache))
    assert again == config and len(parses) == 1
    written = files.cache.read_bytes()
    files.cache.chmod(0o600)
    nothing()
    assert files.cache.read_bytes() == written


def test_a_missing_state_directory_is_not_created(files: Files) -> None:
    files.state.rmdir()
    assert files.load().path == str(files.config)
    assert not files.state.exists()


def test_a_small_config_is_not_cached(tmp_path: Path) -> None:
    small = Files(tmp_path)
    small.config.write_text(config_text(10))
    assert small.config.stat().st_size < config_module.CACHE_MIN_BYTES
    small.load()
    assert not small.cache.exists()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="lvs-cache-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="runs a process as nobody")
@pytest.mark.parametrize("cached", [True, False])
def test_a_user_who_cannot_write_the_state_directory_still_loads(shared_dir: Path,
                                                                  cached: bool) -> None:
    files = Files(shared_dir)
    files.config.write_text(config_text(2000))
    files.config.chmod(0o644)
    if cached:
        files.load()
        before = files.cache.read_bytes()
    code = (f"from lvs_scripts.config import load_config\n"
            f"c = load_config({str(files.config)!r}, {str(files.cache)!r})\n"
            f"print(len(c.services[0].destinations), c.path)\n")
    ran = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, f"2000 {files.config}\n", "")
    if cached:
        assert files.cache.read_bytes() == before
        assert stat.S_IMODE(files.cache.stat().st_mode) == 0o600
    else:
        assert not files.cache.exists()
    assert sorted(p.name for p in files.state.iterdir()) == (
        [files.cache.name] if cached else [])


# --- through the CLI ------------------------------------------------------------------------

def run_director(root: Path, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = director_main(["-c", str(LAB_HA), "--state-dir", str(root / "run"),
                              "--lock-dir", str(root / "lock"), *args])
    return code, err.getvalue()


def test_the_cli_caches_but_still_checks_host(fakehost_inprocess: FakeHost, tmp_path: Path,
                                              parses: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--host is checked against the config on every run, cached or not: it is not part
    of what is cached (nor of its key)."""
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setattr(config_module, "CACHE_MIN_BYTES", 0)
    (tmp_path / "run").mkdir()
    cache = Path(Paths("lvs-director", str(tmp_path / "run")).config_cache)
    code, err = run_director(tmp_path, "--host", "lb1", "--dry-run", "start")
    assert code == 0, err
    assert not cache.exists()  # --dry-run writes nothing, not even the cache
    code, err = run_director(tmp_path, "--host", "lb1", "status")
    assert cache.exists()
    assert len(parses) == 2
    code, err = run_director(tmp_path, "--host", "lb1", "--dry-run", "start")
    assert code == 0, err
    assert len(parses) == 2  # a hit
    code, err = run_director(tmp_path, "--host", "nope", "--dry-run", "start")
    assert len(parses) == 2  # a hit, and still:
    assert code == 6
    assert "nope" in err and "is not among the directors (lb1, lb2)" in err


def test_a_damaged_kept_text_costs_a_full_parse(files: Files, parses: list[str]) -> None:
    """The second pickle (the text and its layout, which only an edit reads) cut short:
    the edit is parsed in full, and right."""
    files.load()
    files.cache.write_bytes(files.cache.read_bytes()[:-50])
    changed = config_text(2000).replace("weight = 1 }", "weight = 7 }", 1)
    files.config.write_text(changed)
    assert files.load() == parse_config(changed, str(files.config))
    assert len(parses) == 2


def services_text(services: int, count: int, weight: int = 1) -> str:
    """SERVICES services of COUNT real servers each (each its own `real` array)."""
    parts = ['[director]\ninterface = "eth0"\n']
    for s in range(services):
        reals = ",\n".join(f'  {{ address = "10.{100 + s}.{i // 250}.{i % 250 + 1}", '
                           f'weight = {weight} }}' for i in range(count))
        parts.append(f'[[service]]\nvip = "10.200.0.{s + 1}"\nport = 80\nreal = [\n{reals}\n]\n')
    return "\n".join(parts)


def test_an_edit_of_a_config_of_many_services_is_read_from_the_cache(
        files: Files, parses: list[str]) -> None:
    """The text and layout kept beside the Config of several services (a layout of several
    arrays) are read back whole: the edit is read from them, not parsed in full."""
    files.config.write_text(services_text(3, 700))
    files.load()
    changed = services_text(3, 700).replace("weight = 1 }", "weight = 7 }", 1)
    files.config.write_text(changed)
    assert files.load() == parse_config(changed, str(files.config))
    assert parses == [str(files.config)]  # the first load's parse only


@pytest.fixture
def new_process() -> Iterator[None]:
    """The parsers' memos of lines read, empty as in a new process, before and after."""
    probes.forget_parsed()
    yield
    probes.forget_parsed()


def test_a_hit_hands_the_parsers_the_lines_of_the_table_as_configured(
        files: Files, new_process: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guesses are unpickled with the Config, not written out anew, and each is the
    Config's own real server (what makes a table as configured compare at C speed)."""
    files.load()
    probes.forget_parsed()  # the next run
    saves = count_calls(monkeypatch, probes, "save_guesses", len)
    listings = count_calls(monkeypatch, probes, "listing_guesses", len)
    config = files.load()
    assert isinstance(config, config_module.Config)
    probes.expect_save_of({s.key: s for s in config.services})  # as observe_director does
    probes.expect_listing_of({s.key: s for s in config.services})
    assert saves == listings == []
    save, listing = probes._plain_seen[0], probes._proc_seen[0]
    assert (save, listing) == probes.config_guesses(config.services)
    assert len(save) == len(listing) == 2000
    ours = {id(dest) for service in config.services for dest in service.destinations}
    assert {id(dest) for _part, _key, dest in save.values()} == ours
    assert {id(dest) for dest in listing.values()} == ours


def test_an_edit_read_from_the_cache_hands_the_parsers_the_bases_lines(
        files: Files, parses: list[str], new_process: None) -> None:
    files.load()
    probes.forget_parsed()
    changed = config_text(2000).replace("weight = 1 }", "weight = 7 }", 1)
    files.config.write_text(changed)
    config = files.load()
    assert len(parses) == 1  # read from the cache's text
    assert isinstance(config, config_module.Config)
    save, listing = probes.config_guesses(config.services)
    # the base's lines: every one but the edited real server's is the edit's own
    assert len(probes._plain_seen[0].keys() & save.keys()) == 1999
    assert len(probes._proc_seen[0].keys() & listing.keys()) == 1999


def test_guesses_of_another_shape_are_not_taken(files: Files, new_process: None) -> None:
    """A file whose second pickle is not two dicts: the Config is taken, the memos stay
    as they were."""
    files.load()
    cache = ConfigCache(str(files.cache), str(files.config), files.config.read_bytes())
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=config_cache.PROTOCOL)
    pickler.dump(parse_config(files.config.read_text(), str(files.config)))
    pickler.dump(({"-a -t 10.200.0.1:80 -r 10.100.0.1:80 -g -w 1": "not a tuple"}, []))
    files.cache.write_bytes(MAGIC + cache.key + cache.base_key + buffer.getvalue())
    probes.forget_parsed()
    assert isinstance(files.load(), config_module.Config)
    assert probes._plain_seen[0] == {} and probes._proc_seen[0] == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="a real start needs root (make test runs as root)")
def test_a_first_start_keeps_the_config_for_the_reload_after_it(
        fakehost_inprocess: FakeHost, tmp_path: Path, parses: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first start on a host makes the state directory: the config it parsed is kept
    there once it is done, so the reload after an edit reads only the edit."""
    monkeypatch.setenv("LVS_SYSLOG", "0")
    fakehost_inprocess.set_ipvs("loaded")
    config = tmp_path / "lvs.toml"
    config.write_text(config_text(2000))
    cache = Path(Paths("lvs-director", str(tmp_path / "run")).config_cache)

    def director(action: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            code = director_main(["-c", str(config), "--state-dir", str(tmp_path / "run"),
                                  "--lock-dir", str(tmp_path / "lock"), action])
        assert code == 0, action

    assert not (tmp_path / "run").exists()
    director("start")
    assert cache.exists() and parses == [str(config)]
    config.write_text(config_text(2000).replace("weight = 1 }", "weight = 3 }", 1))
    director("reload")
    assert parses == [str(config)]  # the edit, read from the text the start kept

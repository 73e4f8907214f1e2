"""The compiled-config cache: a validated Config kept, pickled, in the state directory.

Reading 10,000 real servers costs about 80 ms in tomllib alone and as much again to
validate them; unpickling the Config they became costs about 20 ms. So a run whose
config file is byte for byte the one an earlier run validated takes that Config back.
Beside it the cache keeps the lines `ipvsadm -S -n` and /proc/net/ip_vs list a table as
configured by (probes.config_guesses), which the parsers otherwise write out anew in every
process, and the text with its layout, which an edit is read from (config_delta).

What keys it (`_key`): the file's exact bytes (a hash of the content, not its mtime),
its path (a Config carries it, for messages), the Python version (pickle and ipaddress
come with it) and every module of this package, by name, size, mtime and inode: a new
release or an edited checkout is a miss. Nothing else goes into a Config: what depends
on the machine (`--host` and the [ha] member, the interfaces, an exec check's program)
is checked after loading, on every run, from whichever Config it got.

What it is not trusted with: errors. Only a Config that parse_config returned is
stored, so a bad file is parsed, and refused with the usual message, every time. A
cache file that does not load, or is not a Config of that path, is ignored (then the
file is parsed). Unpickling runs code chosen by whoever wrote the cache, so it is read
only from a directory and a file that root (or whoever runs us) owns and nobody else
can write (locks.check_trusted, as for the state file), never through a symbolic
link; it is written mode 0600. A user who cannot read or write the state directory
(status as non-root) just parses.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import stat
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import StateError
from .locks import check_trusted

if TYPE_CHECKING:
    import pickle
    from typing import TypeGuard

    from .config_delta import Parsed
    from .model import Config

log = logging.getLogger(__name__)

# 4: the Config, the guesses (probes.config_guesses) and the text with its layout, from
# one Pickler. 3 had no guesses; 2 pickled its two apart, and the second's memo
# references resolved to the first's objects: no base for a config of several services.
MAGIC = b"lvs-scripts config cache 4\n"
PROTOCOL = 5  # pickle's protocol: fixed, so that the key need not name it
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _code_stamp() -> bytes:
    """The package's modules as the file system has them: any change of code (a new
    release, an edit) changes what a config file compiles to."""
    stamps = sorted(
        f"{entry.name} {info.st_size} {info.st_mtime_ns} {info.st_ino}"
        for entry in os.scandir(_PACKAGE) if entry.name.endswith(".py")
        for info in (entry.stat(follow_symlinks=True),))
    return "\n".join([sys.version, *stamps]).encode()


def _key(stamp: bytes, path: str, raw: bytes | None) -> bytes:
    """The key of these bytes (raw), or (None) of any bytes of this path and code: the
    key of a base for config_delta."""
    digest = hashlib.sha256(MAGIC)
    for part in (stamp, os.fsencode(path)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    if raw is not None:
        digest.update(b"\x01")
        digest.update(raw)
    return digest.digest()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a Config is unpickled: its objects
    form no cycles, but at 100,000 real servers the collector's passes over all of them
    took more than the unpickling (318 ms against 142 here). Reference counting frees
    them all the same."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ConfigCache:
    """The cache of one config file's bytes, in one cache file."""

    def __init__(self, file: str, path: str, raw: bytes) -> None:
        self.file = file
        self.path = path
        self._data: bytes | None = None
        try:
            stamp = _code_stamp()
        except OSError as err:  # the package's directory unreadable: no cache, no harm
            log.debug("config cache: no key (%s)", err)
            self.key: bytes | None = None
            self.base_key = b""
        else:
            self.key = _key(stamp, path, raw)
            self.base_key = _key(stamp, path, None)

    def load(self) -> Config | None:
        """The Config stored for exactly these bytes, or None (then parse)."""
        if self.key is None:
            return None
        data = self._data = self._read()
        header = MAGIC + self.key + self.base_key
        if data is None or not data.startswith(header):
            return None
        return self._unpickle(data, len(header))

    def base(self) -> Parsed | None:
        """What the cache keeps of another text of the same file (same path, same code):
        the base config_delta.reparse starts from after an edit. Read by load (call it
        first); None if there is none."""
        data, self._data = self._data, None
        if self.key is None or data is None or not data.startswith(MAGIC):
            return None
        start = len(MAGIC) + len(self.key)
        if data[start:start + len(self.base_key)] != self.base_key:
            return None
        from .config_delta import Layout, Parsed

        unpickler = _unpickler(data, start + len(self.base_key))
        try:
            with collector_paused():
                config = unpickler.load()
                guesses = unpickler.load()
                text, layout = unpickler.load()
        except Exception as err:  # as in _unpickle: any failure means "parse"
            log.debug("config cache %s: no base: %s", self.file, err)
            return None
        if not self._ours(config) or not isinstance(text, str) or \
                not isinstance(layout, Layout):
            return None
        _expect(guesses)  # the base's lines: all but the edited ones are the edit's too
        return Parsed(text, layout, config)

    def _read(self) -> bytes | None:
        try:
            self._check_dir()
            fd = os.open(self.file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, StateError) as err:  # none yet, a link, not ours: parse
            log.debug("config cache %s not read: %s", self.file, err)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            check_trusted(self.file, info)
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read()
        except (OSError, StateError) as err:
            log.debug("config cache %s not read: %s", self.file, err)
            return None
        finally:
            os.close(fd)

    def _check_dir(self) -> None:
        directory = os.path.dirname(self.file) or "."
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode):
            raise StateError(f"{directory}: is not a directory")
        check_trusted(directory, info)

    def _unpickle(self, data: bytes, start: int) -> Config | None:
        """The Config, the first of the three pickles `store` writes, and the guesses, the
        second (the third, the text and its layout, only `base` reads)."""
        unpickler = _unpickler(data, start)
        try:
            with collector_paused():
                config = unpickler.load()
                guesses = unpickler.load()
        # A damaged or foreign file can fail in any way unpickling can (EOFError,
        # UnpicklingError, a missing class, ...): every one of them means "parse".
        except Exception as err:
            log.debug("config cache %s ignored: %s", self.file, err)
            return None
        if not self._ours(config):
            return None
        _expect(guesses)
        return config

    def _ours(self, config: object) -> TypeGuard[Config]:
        from .model import Config

        if not isinstance(config, Config) or config.path != self.path:
            log.debug("config cache %s ignored: not a config of %s", self.file, self.path)
            return False
        return True

    def store(self, parsed: Parsed) -> None:
        """Keep a Config that parse_config returned (never one that failed: there is
        none), with its text and layout (config_delta.Parsed). Only into an existing,
        trusted, writable directory; a failure to write costs the next run a parse,
        nothing more."""
        if self.key is None:
            return
        directory = os.path.dirname(self.file) or "."
        try:
            self._check_dir()
        except (OSError, StateError) as err:
            log.debug("config cache not written: %s", err)
            return
        if not os.access(directory, os.W_OK):
            return
        import io
        import pickle

        from .probes import config_guesses

        # One Pickler for all three, read by one Unpickler: its memo holds what the later
        # pickles refer to (the guesses' real servers are the Config's own objects).
        buffer = io.BytesIO()
        buffer.write(MAGIC + self.key + self.base_key)
        pickler = pickle.Pickler(buffer, protocol=PROTOCOL)
        pickler.dump(parsed.config)
        pickler.dump(config_guesses(parsed.config.services))
        pickler.dump((parsed.text, parsed.layout))
        data = buffer.getvalue()
        temporary = os.path.join(directory, f".{os.path.basename(self.file)}.{os.getpid()}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # whatever the umask: the content decides root's work
                with os.fdopen(fd, "wb", closefd=False) as handle:
                    handle.write(data)
            finally:
                os.close(fd)
            os.replace(temporary, self.file)
        except OSError as err:
            log.debug("config cache %s not written: %s", self.file, err)
            try:
                os.unlink(temporary)
            except OSError:
                pass


def _unpickler(data: bytes, start: int) -> pickle.Unpickler:
    """An Unpickler of the cache file's pickles from `start` (the bytes are shared, not
    copied: the file is megabytes). Unpickling runs what the file says: trusted, ours
    (see the module's docstring)."""
    import io
    import pickle

    payload = io.BytesIO(data)
    payload.seek(start)
    return pickle.Unpickler(payload)  # noqa: S301


def _expect(guesses: object) -> None:
    """Hand the lines kept beside the Config to the parsers' memos (probes.config_guesses),
    if they are what store wrote: two dicts. Only what our store wrote is read here, so
    each entry is what the parsers would make of its line."""
    if isinstance(guesses, tuple) and len(guesses) == 2 and all(
            isinstance(part, dict) for part in guesses):
        from .probes import expect_guesses

        expect_guesses(guesses)

"""Fake `ipvsadm`, `ip`, `sysctl`, `arping` and `modprobe` for the tests.

`fakehost.FakeHost` is the emulated machine; `bin/` holds the executables that
the programs under test find first on PATH; `guard` keeps the real tools out.
"""

"""The daemon a fake `bird` leaves behind (see bird_tool.py), started as
`bird bird_daemon.py ARGS...`: loads tests/fakes as the package "fakes" from
this file's location, as the executables in tests/fakes/bin do."""

import importlib.util
import os
import sys

_FAKES = os.path.dirname(os.path.realpath(__file__))
_spec = importlib.util.spec_from_file_location(
    "fakes", os.path.join(_FAKES, "__init__.py"), submodule_search_locations=[_FAKES])
assert _spec is not None and _spec.loader is not None
_package = importlib.util.module_from_spec(_spec)
sys.modules["fakes"] = _package
_spec.loader.exec_module(_package)

from fakes.bird_tool import daemon  # noqa: E402

sys.exit(daemon(sys.argv[1:]))

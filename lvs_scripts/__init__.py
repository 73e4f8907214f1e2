"""lvs_scripts: an LVS-DR director and its real servers, from one config file.

    from lvs_scripts import load_config, Director
    director = Director(load_config("/etc/lvs/lvs.toml"))
    report = director.start()        # observe, plan, apply, verify
    print(director.status().summary)

The names below are imported on first use, so that the command line (which imports
this package) starts fast and loads only what its action needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "load_config": "config", "parse_config": "config",
    "Director": "director", "RealServer": "realserver",
    "ApplyFailed": "errors", "Busy": "errors", "CommandFailed": "errors",
    "ConfigError": "errors", "Interrupted": "errors", "IpvsUnavailable": "errors",
    "LvsError": "errors", "MissingTool": "errors", "NotRoot": "errors", "StateError": "errors",
    "Config": "model", "Destination": "model", "ServiceKey": "model",
    "VirtualService": "model",
    "Outcome": "plan", "Plan": "plan", "Step": "plan",
    "Report": "role", "Status": "role",
    "PlumbumRunner": "runner", "Result": "runner", "Runner": "runner",
    "Paths": "locks",
}

__all__ = [
    "ApplyFailed", "Busy", "CommandFailed", "Config", "ConfigError", "Destination", "Director",
    "Interrupted", "IpvsUnavailable", "LvsError", "MissingTool", "NotRoot", "Outcome", "Paths",
    "Plan", "PlumbumRunner", "RealServer", "Report", "Result", "Runner", "ServiceKey",
    "StateError", "Status", "Step", "VirtualService", "load_config", "parse_config",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lvs_scripts' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .config import load_config, parse_config
    from .director import Director
    from .errors import (
        ApplyFailed,
        Busy,
        CommandFailed,
        ConfigError,
        Interrupted,
        IpvsUnavailable,
        LvsError,
        MissingTool,
        NotRoot,
        StateError,
    )
    from .locks import Paths
    from .model import Config, Destination, ServiceKey, VirtualService
    from .plan import Outcome, Plan, Step
    from .realserver import RealServer
    from .role import Report, Status
    from .runner import PlumbumRunner, Result, Runner

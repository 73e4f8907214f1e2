"""lvs_scripts: an LVS-DR director and its real servers, from one config file.

    from lvs_scripts import load_config, Director
    director = Director(load_config("/etc/lvs/lvs.toml"))
    report = director.start()        # observe, plan, apply, verify
    print(director.status().summary)
"""

from .config import load_config, parse_config
from .director import Director
from .errors import (
    ApplyFailed,
    Busy,
    CommandFailed,
    ConfigError,
    IpvsUnavailable,
    LvsError,
    MissingTool,
    NotRoot,
    StateError,
)
from .model import Config, Destination, ServiceKey, VirtualService
from .plan import Plan, Step
from .realserver import RealServer
from .role import Report, Status
from .runner import PlumbumRunner, Result, Runner
from .state import Paths

__all__ = [
    "ApplyFailed", "Busy", "CommandFailed", "Config", "ConfigError", "Destination", "Director",
    "IpvsUnavailable", "LvsError", "MissingTool", "NotRoot", "Paths", "Plan", "PlumbumRunner",
    "RealServer", "Report", "Result", "Runner", "ServiceKey", "StateError", "Status", "Step",
    "VirtualService", "load_config", "parse_config",
]

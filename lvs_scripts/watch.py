"""`lvs-director watch` (being written)."""

from __future__ import annotations

from .role import Role


def watch(role: Role, config_path: str, verbose: bool = False) -> int:
    raise NotImplementedError

"""The host side of the lab that needs no VM: where a run's results go."""

from __future__ import annotations

import os
from pathlib import Path

from lab.__main__ import results_folder


def test_concurrent_runs_of_one_command_get_separate_results_folders(tmp_path: Path) -> None:
    with results_folder("pytest", tmp_path) as first:
        with results_folder("pytest", tmp_path) as second:
            assert second == tmp_path / f"pytest-{os.getpid()}"
        with results_folder("demo", tmp_path) as other:
            assert other == tmp_path / "demo"  # another command: its own folder anyway
    assert first == tmp_path / "pytest"
    with results_folder("pytest", tmp_path) as later:  # the first run is over: free again
        assert later == tmp_path / "pytest"

"""Without the right to the IPVS table, on the real kernel (issue 9, item 6).

ipvsadm needs CAP_NET_ADMIN even to list the table. As a user, or as a root whose
capabilities were cut, the real ipvsadm must say what the fake says, and the CLI must
report "could not be read as user ..." (status: exit 4), never "no IPVS support".
"""

from __future__ import annotations

import pytest

from tests.e2e.labhosts import LAB_ONLY, VENV_BIN, initd, lvs_env, run_on
from tests.fakes.ipvsadm_tool import STRERROR

pytestmark = [pytest.mark.lab, LAB_ONLY]

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# root, but CAP_NET_ADMIN out of the bounding set: lost at exec
AS_ROOT_WITHOUT_NET_ADMIN = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"]


def test_the_real_ipvsadm_says_what_the_fake_says(fresh: None) -> None:
    done = run_on("director", [*AS_NOBODY, "ipvsadm", "-S", "-n"])
    assert done.returncode == 2, done
    assert done.stderr.splitlines()[-2:] == [
        f"Can't initialize ipvs: {STRERROR[(None, 'EPERM')]}",
        "Are you sure that IP Virtual Server is built in the kernel or as module?"], done


def test_status_and_dry_run_without_the_right_to_the_table(fresh: None) -> None:
    assert initd("director", "start").returncode == 0
    env = lvs_env("director")
    lvs_director = [str(VENV_BIN / "lvs-director")]

    status = run_on("director", [*AS_NOBODY, *lvs_director, "status"], env)
    assert status.returncode == 4, status
    assert "status unknown: the IPVS table could not be read as user nobody (uid 65534)" \
        in status.stderr, status
    assert "IPVS support" not in status.stderr

    dry = run_on("director", [*AS_NOBODY, *lvs_director, "--dry-run", "start"], env)
    assert dry.returncode == 0, dry
    assert "# note: the IPVS table could not be read as user nobody" in dry.stdout, dry
    assert "could not be read as user nobody" in dry.stderr

    capped = run_on("director", [*AS_ROOT_WITHOUT_NET_ADMIN, *lvs_director, "reload"], env)
    assert capped.returncode == 4, capped
    assert "CAP_NET_ADMIN" in capped.stderr, capped
    assert initd("director", "status").returncode == 0  # and nothing was changed

"""``python -m lab capture``: real outputs for the parser tests.

The guest half (``lab/capture.sh``) builds a varied IPVS table and records
what ipvsadm, ip, sysctl and iputils' arping print on the lab's kernel. This
half copies those files to ``tests/data/captured/``, adds Thomas Habets'
arping (unpacked, never installed: it conflicts with iputils-arping, and it
is only asked for its help text) and writes the folder's README.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from lab import vm
from lab.prepare import LabImage, LabUnavailable

DESTINATION = vm.CHECKOUT / "tests" / "data" / "captured"
HOST_TOOLS = ("ipvsadm", "iproute2", "procps", "iputils-arping")

# Habets' arping has no version option: -V takes a VLAN number, and the
# version is the first line of the -h / --help text.
HABETS_OPTIONS = {
    "arping-habets-h": ["-h"],
    "arping-habets-help": ["--help"],
    "arping-habets-V": ["-V"],
    "arping-habets-version": ["--version"],
}


def capture(image: LabImage, results: Path, timeout: float) -> int:
    outcome = vm.run(image, ["bash", "lab/capture.sh"], results, timeout=timeout)
    if outcome.exit_code != 0:
        print(f"lab: capture failed in the guest (exit {outcome.exit_code}), nothing copied")
        return outcome.exit_code or 1
    captured = results / "captured"
    rows = [line.split("\t") for line in (captured / "MANIFEST.tsv").read_text().splitlines()]
    kernel = (captured / "KERNEL").read_text().strip()

    DESTINATION.mkdir(parents=True, exist_ok=True)
    for old in DESTINATION.iterdir():
        old.unlink()
    for path in captured.iterdir():
        if path.name not in ("MANIFEST.tsv", "KERNEL"):
            shutil.copy2(path, DESTINATION / path.name)
    habets_version, habets_rows = _capture_habets(DESTINATION)
    rows += habets_rows
    (DESTINATION / "README.md").write_text(_readme(rows, kernel, habets_version))
    print(f"lab: {len(rows)} captures written to {DESTINATION}")
    return 0


def _capture_habets(destination: Path) -> tuple[str, list[list[str]]]:
    with tempfile.TemporaryDirectory(prefix="lab-arping-") as tmp:
        folder = Path(tmp)
        # Its libraries may be missing on the host too; unpack them beside it.
        packages = ["arping", "libpcap0.8", "libnet1"]
        result = subprocess.run(
            ["apt-get", "download", "-q", *packages],
            cwd=folder, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LabUnavailable(f"cannot download {' '.join(packages)}: {result.stderr.strip()}")
        for deb in folder.glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(folder / "root")], check=True)
        version = next(folder.glob("arping_*.deb")).name.split("_")[1]
        env = {"LC_ALL": "C", "LD_LIBRARY_PATH": str(folder / "root/usr/lib/x86_64-linux-gnu")}
        rows = []
        for name, options in HABETS_OPTIONS.items():
            ran = subprocess.run(
                [str(folder / "root/usr/sbin/arping"), *options],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            # argv[0] is the unpacked path; show it as an installed one would be.
            stderr = ran.stderr.replace(str(folder / "root"), "")
            (destination / f"{name}.txt").write_text(ran.stdout)
            (destination / f"{name}.rc").write_text(f"{ran.returncode}\n")
            if stderr:
                (destination / f"{name}.stderr.txt").write_text(stderr)
            rows.append([name, "(host, Habets' arping)", "arping " + " ".join(options)])
        return version, rows


def _package_versions() -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *HOST_TOOLS],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip()


def _ipvs_banner() -> str:
    """The kernel's own IPVS version line, as ipvsadm -L prints it."""
    listing = (DESTINATION / "ipvsadm-L-n.empty.txt").read_text()
    return listing.splitlines()[0] if listing else "IPVS version unknown"


def _readme(rows: list[list[str]], kernel: str, habets_version: str) -> str:
    lines = [
        "# Captured outputs",
        "",
        "Real outputs of the tools the library parses, for the parser tests. Made by",
        "`python -m lab capture` (lab/capture.sh inside the lab VM); do not edit by hand,",
        "capture again.",
        "",
        "Each capture NAME is `NAME.txt` (stdout, possibly empty), `NAME.rc` (exit code)",
        "and `NAME.stderr.txt` when the command wrote to stderr. Commands ran with",
        "`LC_ALL=C` in the network namespace named under *host* (`ip netns exec HOST ...`)",
        "of the lab's topology (lab/topology.sh): the director has eth0 192.168.30.105/24",
        "and the VIP 192.168.30.254/32, rs1..rs4 have 192.168.30.111..114/24 and the VIP",
        "on lo. The *mixed* IPVS table is built by lab/capture.sh (see its comments).",
        "",
        f"- kernel: Debian {kernel} (under QEMU); {_ipvs_banner()}",
        "- Debian packages (bookworm):",
    ]
    lines += [f"  - {line}" for line in _package_versions().splitlines()]
    lines += [
        f"  - arping {habets_version} (Thomas Habets'; unpacked, not installed;"
        " run on the host for its help only)",
        "",
        "| capture | host | command | exit |",
        "| --- | --- | --- | --- |",
    ]
    for name, host, command in rows:
        rc = (DESTINATION / f"{name}.rc").read_text().strip()
        stderr = " (stderr)" if (DESTINATION / f"{name}.stderr.txt").exists() else ""
        lines.append(f"| `{name}` | {host} | `{command}` | {rc}{stderr} |")
    return "\n".join(lines) + "\n"

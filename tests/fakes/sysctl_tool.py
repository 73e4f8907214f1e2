"""Fake `sysctl`: procps-ng 4.0.2 (Debian 12) over the emulated /proc/sys.

From a reading of procps `src/sysctl.c` (`slashdot`, `ReadSetting`,
`WriteSetting`, `parse_setting_line`, `Preload`, `main`) and of what 4.0.2 did in
a scratch network namespace:

- `sysctl -n KEY`; `sysctl KEY` prints `KEY = VALUE`; keys dotted
  (`net.ipv4.conf.all.arp_ignore`) or slashed (`net/ipv4/conf/eth0.100/arp_ignore`,
  the only way to name a device with a dot); output names are always dotted,
  so that one prints as `net.ipv4.conf.eth0/100.arp_ignore`.
- A missing key: `sysctl: cannot stat /proc/sys/...: No such file or
  directory`, status 1 (0 with `-e`). Read failures add up (two missing keys:
  status 2); write failures are or-ed.
- `-w KEY=VALUE` (or any argument with `=`) writes and echoes `KEY = VALUE`
  unless `-q`; a value the kernel rejects: `sysctl: setting key "KEY": Invalid
  argument`, status 1. `-w KEY` without `=`: `sysctl: command line(0): invalid
  syntax, continuing...`, status 1.
- Writing `net.ipv4.conf.default.X` also changes X on every device where X was
  never written (devinet_copy_dflt_conf); `ip_forward` and
  `conf.all.forwarding` move together.
"""

# Option parsers and printers with one branch per option, like the C they imitate:
# ruff: noqa: PLR0912

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from .model import Run, State, ToolExit, getopt

VERSION = "sysctl from procps-ng 4.0.2"
PROC = "/proc/sys/"

USAGE = """
Usage:
 sysctl [options] [variable[=value] ...]

Options:
  -a, --all            display all variables
  -A                   alias of -a
  -X                   alias of -a
      --deprecated     include deprecated parameters to listing
      --dry-run        Print the key and values but do not write
  -b, --binary         print value without new line
  -e, --ignore         ignore unknown variables errors
  -N, --names          print variable names without values
  -n, --values         print only values of the given variable(s)
  -p, --load[=<file>]  read values from file
  -f                   alias of -p
      --system         read values from all system directories
  -r, --pattern <expression>
                       select setting that match expression
  -q, --quiet          do not echo variable set
  -w, --write          enable writing a value to variable
  -o                   does nothing
  -x                   does nothing
  -d                   alias of -h

 -h, --help     display this help and exit
 -V, --version  output version information and exit

For more details see sysctl(8)."""

LONGOPTS = {
    "all": ("a", None), "deprecated": ("deprecated", None), "dry-run": ("dry-run", None),
    "binary": ("b", None), "ignore": ("e", None), "names": ("N", None),
    "values": ("n", None), "load": ("p", "opt"), "quiet": ("q", None),
    "write": ("w", None), "system": ("system", None), "pattern": ("r", "req"),
    "help": ("h", None), "version": ("V", None),
}
SHORTOPTS = "bneNwfp::qoxaAXr:Vdh"


def slashdot(p: str, old: str, new: str) -> str:
    """Swap '.' and '/' from the first separator on, unless it is already `new`."""
    m = re.search(r"[/.]", p)
    if m is None or p[m.start()] == new:
        return p
    head, tail = p[: m.start()], p[m.start():]
    return head + tail.translate(str.maketrans({old: new, new: old}))


class Flags:
    def __init__(self) -> None:
        self.print_name = True
        self.print_newline = True
        self.ignore_error = False
        self.quiet = False
        self.name_only = False
        self.dry_run = False


def _is_dir(st: State, path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(k.startswith(prefix) for k in st["sysctl"])


def _exists(st: State, path: str) -> bool:
    return path in st["sysctl"] or _is_dir(st, path)


def read_setting(run: Run, flags: Flags, name: str) -> int:
    st = run.state
    if not name:
        run.eprint(f'sysctl: "{name}" is an unknown key')
        return -1
    path = slashdot(name, ".", "/")
    outname = slashdot(name, "/", ".")
    if not _exists(st, path):
        if not flags.ignore_error:
            run.eprint(f"sysctl: cannot stat {PROC}{path}: No such file or directory")
            return 1
        return 0
    if _is_dir(st, path):
        return display_all(run, flags, path.rstrip("/") + "/")
    if flags.name_only:
        run.print(outname)
    elif flags.print_name:
        run.print(f"{outname} = {st['sysctl'][path]}")
    else:
        run.print(st["sysctl"][path], end="\n" if flags.print_newline else "")
    return 0


def display_all(run: Run, flags: Flags, prefix: str) -> int:
    rc = 0
    for key in sorted(k for k in run.state["sysctl"] if k.startswith(prefix)):
        rc |= read_setting(run, flags, key)
    return rc


def _kernel_value(current: str, value: str) -> str | None:
    """What the kernel stores for `value`, None if it refuses (EINVAL)."""
    if re.fullmatch(r"-?\d+(\t-?\d+)*", current):
        words = value.split()
        if len(words) != len(current.split("\t")) and len(words) != 1:
            return None
        if not words or not all(re.fullmatch(r"[+-]?\d+", w) for w in words):
            return None
        if len(words) == 1 and "\t" in current:
            return None
        return "\t".join(str(int(w)) for w in words)
    return value


def _store(st: State, path: str, value: str) -> None:
    sysctl = st["sysctl"]
    sysctl[path] = value
    explicit = st.setdefault("sysctl_written", [])
    if path not in explicit:
        explicit.append(path)
    m = re.fullmatch(r"net/ipv4/conf/default/([^/]+)", path)
    if m:
        for ifc in st["interfaces"]:
            dev_path = f"net/ipv4/conf/{ifc['name']}/{m.group(1)}"
            if dev_path in sysctl and dev_path not in explicit:
                sysctl[dev_path] = value
    if path in ("net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding"):
        sysctl["net/ipv4/ip_forward"] = value
        sysctl["net/ipv4/conf/all/forwarding"] = value
        for ifc in st["interfaces"]:
            sysctl[f"net/ipv4/conf/{ifc['name']}/forwarding"] = value


def write_setting(run: Run, flags: Flags, path: str, value: str) -> int:
    st = run.state
    if not _exists(st, path):
        if not flags.ignore_error:
            run.eprint(f"sysctl: cannot stat {PROC}{path}: No such file or directory")
            return 1
        return 0
    dotted = slashdot(path, "/", ".")
    if _is_dir(st, path):
        run.eprint(f'sysctl: setting key "{dotted}": Is a directory')
        return 1
    if not flags.dry_run:
        stored = _kernel_value(st["sysctl"][path], value)
        if stored is None:
            run.eprint(f'sysctl: setting key "{dotted}": Invalid argument')
            return 1
        _store(st, path, stored)
    if not flags.quiet or flags.dry_run:
        if flags.name_only:
            run.print(dotted)
        elif flags.print_name:
            run.print(f"{dotted} = {value}")
        else:
            run.print(value, end="\n" if flags.print_newline else "")
    return 0


def parse_setting_line(run: Run, where: str, linenum: int,
                       line: str) -> tuple[str, str, bool] | None:
    """(path, value, glob) or None, as parse_setting_line() + setting_new()."""
    key = line.lstrip()
    if len(key) < 2 or key[0] in "#;":
        return None
    if "=" not in key:
        if key[0] == "-":
            return None  # a glob exclusion: nothing to write
        run.eprint(f"sysctl: {where}({linenum}): invalid syntax, continuing...")
        return None
    key, _, value = key.partition("=")
    if key.startswith("-"):
        key = key[1:]
    key = key.rstrip()
    value = value.strip()
    path = slashdot(key, ".", "/")
    return path, value, any(c in path for c in "*?[")


def preload(run: Run, flags: Flags, filename: str) -> int:
    files = run.state.get("files", {})
    if filename in files:
        text = files[filename]
    else:
        try:
            text = Path(filename).read_text()
        except OSError as exc:
            run.eprint(f'sysctl: cannot open "{filename}": {exc.strerror}')
            return 1
    rc = 0
    for n, line in enumerate(text.splitlines(keepends=True), start=1):
        if len(line) < 2:
            continue
        setting = parse_setting_line(run, filename, n, line)
        if setting is None:
            continue
        path, value, is_glob = setting
        if is_glob:
            for key in sorted(k for k in run.state["sysctl"] if fnmatch.fnmatchcase(k, path)):
                rc |= write_setting(run, flags, key, value)
        else:
            rc |= write_setting(run, flags, path, value)
    return rc


def parse_args(run: Run, args: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """getopt_long() with GNU argument permutation."""

    def long_option(word: str, i: int) -> tuple[tuple[str, str | None], int]:
        name, eq, value = word[2:].partition("=")
        hits = [n for n in LONGOPTS if n.startswith(name)] if name not in LONGOPTS else [name]
        if len(hits) != 1:
            what = "unrecognized" if not hits else "ambiguous"
            run.eprint(f"sysctl: {what} option '{word}'")
            usage(run, 0)
        tag, takes = LONGOPTS[hits[0]]
        if takes == "req" and not eq:
            if i >= len(args):
                run.eprint(f"sysctl: option '--{hits[0]}' requires an argument")
                usage(run, 0)
            value, eq = args[i], "="
            i += 1
        return (tag, value if eq else None), i

    found, operands, error = getopt("sysctl", args, SHORTOPTS, long_option)
    if error:
        run.eprint(error)
        usage(run, 0)
    opts = {"p" if tag == "f" else tag: value for tag, value in found}  # -f: alias of -p
    return opts, operands


def usage(run: Run, rc: int) -> None:
    (run.print if rc == 0 else run.eprint)(USAGE)
    raise ToolExit(rc)


def main(run: Run) -> int:
    if not run.args:
        usage(run, 1)
    opts, operands = parse_args(run, run.args)
    flags = Flags()
    if "b" in opts:
        flags.print_newline = False
        flags.print_name = False
    if "n" in opts:
        flags.print_name = False
    flags.ignore_error = "e" in opts
    flags.name_only = "N" in opts
    flags.quiet = "q" in opts
    flags.dry_run = "dry-run" in opts
    if "V" in opts:
        run.print(VERSION)
        return 0
    if opts.keys() & {"h", "d"}:
        usage(run, 0)
    if "r" in opts or "system" in opts:
        run.unsupported("--pattern / --system")
    if opts.keys() & {"a", "A", "X"}:
        return display_all(run, flags, "")
    if "p" in opts:
        rc = 0
        if opts["p"]:
            rc |= preload(run, flags, str(opts["p"]))
        elif not operands:
            rc |= preload(run, flags, "/etc/sysctl.conf")
        for name in operands:
            rc |= preload(run, flags, name)
        return rc
    if not operands:
        run.eprint("sysctl: no variables specified\nTry `sysctl --help' for more information.")
        return 1
    if flags.name_only and flags.quiet:
        run.eprint(
            "sysctl: options -N and -q cannot coexist\n"
            "Try `sysctl --help' for more information."
        )
        return 1
    rc = 0
    for arg in operands:
        if "w" in opts or "=" in arg:
            setting = parse_setting_line(run, "command line", 0, arg)
            if setting is None:
                rc |= 1
            else:
                rc |= write_setting(run, flags, setting[0], setting[1])
        else:
            rc += read_setting(run, flags, arg)
    return rc

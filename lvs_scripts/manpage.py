"""Man pages generated from the sources the programs and the README already use, so that
they cannot drift apart from them:

- lvs-director(8), lvs-realserver(8): the argparse parsers of cli.py (what --help prints);
- lvs.toml(5): doc/lvs.toml.md, which is also the README's section "The config file".

    python3 -m lvs_scripts.manpage OUTDIR        write the three pages into OUTDIR
    python3 -m lvs_scripts.manpage --readme      put doc/lvs.toml.md into README.md

Run at package build time (debian/rules) and by `make man`. Only the standard library and
cli.py (which imports no more than argparse at the top) are needed: no plumbum at build.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import cli

PROGRAMS = ("lvs-director", "lvs-realserver")
CONFIG_DOC = Path("doc") / "lvs.toml.md"
README_SECTION = "## The config file"
SOURCE = "lvs-scripts"
MANUAL = {8: "System Administration", 5: "File Formats"}

# What each action does, in a sentence: argparse has no help for the choices of a positional.
ACTIONS = {
    "lvs-director": {
        "start": "add the DIP, the VIPs, the default route and the IPVS services the config "
                 "describes, then announce the VIPs with arping; a second start changes nothing",
        "stop": "remove what start added (never `ipvsadm -C`, never an interface down) and put "
                "back the default route and timeouts it replaced",
        "restart": "stop, then start",
        "reload": "apply the edited config: add what is new, change what differs, drain and "
                  "then delete the real servers and services it no longer has; a running "
                  "`watch` of the same config file does it (SIGHUP) and the exit code is "
                  "its result's; --via-watcher insists on that (exit 7 without a watcher)",
        "force-reload": "the same as reload",
        "status": "read the kernel and compare with the config; differences are printed as "
                  "the commands that would repair them; with health checks, each real server's "
                  "health (up, down, disabled, unchecked)",
        "watch": "run the health checker in the foreground: check the real servers of every "
                 "service with a `[service.check]`, set a failed one to weight 0 (or remove it) "
                 "and put it back once it passes `rise` checks; SIGHUP is a full reload (as "
                 "`reload`, in the watcher, its pid in the state directory's "
                 "lvs-director.watch.pid), "
                 "SIGTERM exits leaving the weights as they are (init script: "
                 "lvs-director-watch)",
        "disable": "`disable ADDRESS [--service VIP:PORT|fwmark:MARK]`: set the real server "
                   "to weight 0 (open connections finish) and keep it there, whatever its "
                   "checks say, until `enable`",
        "enable": "`enable ADDRESS [--service VIP:PORT|fwmark:MARK]`: undo `disable`; the "
                  "server gets its configured weight back unless its checks say it is down",
    },
    "lvs-realserver": {
        "start": "set arp_ignore=1 and arp_announce=2 on `all` and the `arp_interfaces`, then "
                 "add the VIPs of the `dr` services to lo",
        "stop": "remove the VIPs start added and put back the ARP settings it replaced",
        "restart": "stop, then start",
        "reload": "the same as start",
        "force-reload": "the same as start",
        "status": "read the kernel and compare with the config",
    },
}
ENVIRONMENT = (
    ("LVS_CONFIG", "the config file when -c is not given"),
    ("LVS_STATE_DIR", "the state directory when --state-dir is not given"),
    ("LVS_LOCK_DIR", "the lock directory when --lock-dir is not given"),
    ("LVS_SYSLOG", "0: do not log to syslog"),
)


def escape(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def inline(text: str) -> str:
    """Markdown's `code` and **strong** as bold, *emphasis* as italic; the rest escaped."""
    out = []
    for part in re.split(r"(`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*)", text):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append("\\fB" + escape(part[1:-1]) + "\\fR")
        elif part.startswith("**") and part.endswith("**") and len(part) > 3:
            out.append("\\fB" + escape(part[2:-2]) + "\\fR")
        elif part.startswith("*") and part.endswith("*") and len(part) > 2:
            out.append("\\fI" + escape(part[1:-1]) + "\\fR")
        else:
            out.append(escape(part))
    return "".join(out)


def markdown_to_roff(markdown: str) -> list[str]:
    """The Markdown the doc sources use: paragraphs, ``` blocks, `- ` lists, ### headings."""
    lines: list[str] = []
    blocks = iter(markdown.strip("\n").split("\n"))
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            lines.append(inline(" ".join(paragraph)))
            paragraph.clear()

    for line in blocks:
        if line.startswith("```"):
            flush()
            lines.extend([".PP", ".nf", ".RS 4"])
            for code in blocks:
                if code.startswith("```"):
                    break
                lines.append(escape(code) if code else "")
            lines.extend([".RE", ".fi"])
        elif line.startswith("### "):
            flush()
            lines.extend([".SS " + escape(line[4:])])
        elif line.startswith("- "):
            flush()
            lines.extend([".IP \\(bu 2"])
            paragraph.append(line[2:])
        elif line.startswith("  ") and paragraph and lines and lines[-1].startswith(".IP"):
            paragraph.append(line.strip())
        elif not line.strip():
            flush()
        else:
            if not paragraph:
                lines.append(".PP")
            paragraph.append(line.strip())
    flush()
    return lines


def header(name: str, section: int, version: str) -> list[str]:
    return [f'.TH "{name.upper()}" "{section}" "" "{SOURCE} {version}" "{MANUAL[section]}"',
            ".nh", ".ad l"]


def _option_words(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{escape(option)}\\fR" for option in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    return f"{names} \\fI{escape(str(metavar))}\\fR"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    # What argparse itself does with a help string (HelpFormatter._expand_help).
    text = action.help or ""
    return text % dict(vars(action), prog=parser.prog) if "%" in text else text


def _options(parser: argparse.ArgumentParser) -> Iterable[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]  # argparse has no public list


def _positional(parser: argparse.ArgumentParser) -> argparse.Action:
    return next(a for a in parser._actions if not a.option_strings)


def synopsis(parser: argparse.ArgumentParser) -> list[str]:
    words = []
    for action in _options(parser):
        if isinstance(action, argparse._HelpAction):
            continue
        first = f"\\fB{escape(action.option_strings[0])}\\fR"
        if action.nargs != 0:
            first += f" \\fI{escape(str(action.metavar or action.dest.upper()))}\\fR"
        words.append(f"[{first}]")
    choices = "|\\:".join(f"\\fB{escape(str(c))}\\fR" for c in _positional(parser).choices or ())
    return [".SY " + parser.prog, *words, "{" + choices + "}", ".YS"]


def program_page(prog: str, version: str) -> str:
    parser = cli.parser(prog)
    other = PROGRAMS[1 - PROGRAMS.index(prog)]
    lines = [*header(prog, 8, version), ".SH NAME",
             f"{prog} \\- {escape((parser.description or '').rstrip('.'))}",
             ".SH SYNOPSIS", *synopsis(parser),
             ".SH DESCRIPTION",
             inline(f"`{prog}` reads one config file, shared by the director and every real "
                    "server (see lvs.toml(5)), observes the host, plans only what is missing "
                    "or different, applies it and observes again to verify. `--dry-run` "
                    "prints the plan as a shell script and changes nothing."),
             ".SH ACTIONS"]
    for action in _positional(parser).choices or ():
        lines.extend([".TP", f"\\fB{escape(str(action))}\\fR",
                      inline(ACTIONS[prog].get(str(action), "see --help") + ".")])
    lines.append(".SH OPTIONS")
    for action in _options(parser):
        lines.extend([".TP", _option_words(action), inline(_help(parser, action))])
    lines.extend([".SH EXIT STATUS", inline(parser.epilog or ""), ".SH ENVIRONMENT"])
    for name, meaning in ENVIRONMENT:
        lines.extend([".TP", f"\\fB{name}\\fR", escape(meaning)])
    lines.extend([
        ".SH FILES",
        ".TP", f"\\fI{escape(cli.DEFAULT_CONFIG)}\\fR", "the config file (lvs.toml(5))",
        ".TP", f"\\fI/etc/default/{escape(prog)}\\fR",
        "settings (the variables of ENVIRONMENT) for the init script and the systemd unit",
        ".TP", f"\\fI{escape(cli.DEFAULT_STATE_DIR)}/\\fR",
        "the state file: what start added, so that stop removes exactly that",
        ".TP", f"\\fI{escape(cli.DEFAULT_LOCK_DIR)}/{escape(prog)}\\fR",
        "the SysV lock file, present while running",
        ".SH SEE ALSO",
        f"\\fB{escape(other)}\\fR(8), \\fBlvs.toml\\fR(5), \\fBipvsadm\\fR(8), "
        "\\fBip\\fR(8), \\fBarping\\fR(8), \\fBsysctl\\fR(8)"])
    return "\n".join(lines) + "\n"


def config_page(markdown: str, version: str) -> str:
    lines = [*header("lvs.toml", 5, version), ".SH NAME",
             "lvs.toml \\- the config file of lvs\\-director and lvs\\-realserver",
             ".SH DESCRIPTION", *markdown_to_roff(markdown),
             ".SH FILES", ".TP", f"\\fI{escape(cli.DEFAULT_CONFIG)}\\fR",
             "the default location (option \\fB\\-c\\fR, variable \\fBLVS_CONFIG\\fR)",
             ".SH SEE ALSO", "\\fBlvs\\-director\\fR(8), \\fBlvs\\-realserver\\fR(8), "
             "\\fBipvsadm\\fR(8)"]
    return "\n".join(lines) + "\n"


def version(root: Path) -> str:
    for line in (root / "setup.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "version":
            return value.strip()
    raise ValueError(f"{root / 'setup.cfg'}: no version")


def pages(root: Path) -> dict[str, str]:
    """File name -> page text, for every man page."""
    release = version(root)
    result = {f"{prog}.8": program_page(prog, release) for prog in PROGRAMS}
    result["lvs.toml.5"] = config_page((root / CONFIG_DOC).read_text(), release)
    return result


def readme_with_config_doc(readme: str, doc: str) -> str:
    """README.md whose section "The config file" is the doc source, word for word."""
    start = readme.index(README_SECTION + "\n") + len(README_SECTION) + 1
    end = readme.index("\n## ", start)
    return readme[:start] + "\n" + doc.strip("\n") + "\n" + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python3 -m lvs_scripts.manpage")
    args.add_argument("outdir", nargs="?", help="write the man pages here")
    args.add_argument("--readme", action="store_true",
                      help="rewrite README.md's config section from doc/lvs.toml.md")
    args.add_argument("--root", default=".", help="the source tree (default: .)")
    parsed = args.parse_args(argv)
    root = Path(parsed.root)
    if parsed.readme:
        readme = root / "README.md"
        readme.write_text(readme_with_config_doc(readme.read_text(),
                                                 (root / CONFIG_DOC).read_text()))
    if parsed.outdir:
        out = Path(parsed.outdir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in pages(root).items():
            (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cdm-bench`` command line: thin subcommands over the Python API.

    cdm-bench ls metrics|generators|prompts|recipes
    cdm-bench generate --generator NAME_OR_YAML --prompts SET_OR_FILE --out DIR
    cdm-bench evaluate --images DIR --metrics NAME[,NAME...] --out DIR
    cdm-bench leaderboard RUN_DIR... --out DIR
    cdm-bench run SPEC.yaml [--out DIR]
    cdm-bench demo --out DIR [--quick]
    cdm-bench train RECIPE [--set k=v]      cdm-bench export CHECKPOINT --out DIR
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

# subcommand modules; each exposes add_parser(subparsers) and sets func=callable(args) -> int
SUBCOMMANDS = ["ls", "phases", "run", "demo", "train", "export", "sweep"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``PROG: error: ...; see PROG --help``), exit code 2, like
    every other user error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cdm-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"cdm_bench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cdm_bench.cli.{name}":
                continue  # optional subcommand not present in this checkout
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A :class:`~cdm_bench.errors.CdmBenchError` is printed as one line
    (no traceback) with exit code 2; anything else is a bug and keeps its traceback."""
    from cdm_bench.errors import CdmBenchError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CdmBenchError as exc:
        print(f"cdm-bench {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"cdm-bench {args.command}: error: cannot use{where}: {exc.strerror} (check the path and its "
              f"permissions)", file=sys.stderr)
        return 2


#: file-system errors that are the user's situation, not a bug (permissions, read-only or full
#: disks, names too long, a file where a folder is expected, ...): one line, exit code 2
USER_OS_ERRORS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
                            errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ELOOP, errno.EBUSY})


if __name__ == "__main__":
    sys.exit(main())

"""The ``focalmix`` command: dispatch to a subcommand, and print user errors in one line.

User errors (a bad flag or value, a missing file, bad data, an unreadable checkpoint) end in one line,
``focalmix: error: <message>``, at most one hint line and exit code 2; ``--debug`` (or
``FOCALMIX_DEBUG=1``) shows the traceback. Anything else is a bug and keeps its traceback.

The top floor of the package: ``fit``, ``validate``, ``test``, ``predict`` and ``report`` run
:class:`~focalmix.cli_base.FocalMixCLI`; ``tune`` and ``export`` run their own module's ``main(argv)``.
Nothing imports this module but ``__main__``; the names below are re-exported for callers of
``focalmix.cli``.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from lightning.pytorch.utilities.exceptions import SIGTERMException

from focalmix._cli_text import LINKS, PRESETS, UsageError, preset_path
from focalmix.cli_base import FocalMixCLI, ReportCLI
from focalmix.cli_checkpoint import checkpoint_positive, load_checkpoint
from focalmix.console import quiet_console

__all__ = ["LINKS", "PRESETS", "FocalMixCLI", "UsageError", "load_checkpoint", "main", "preset_path"]

_checkpoint_positive = checkpoint_positive  # its name before the split (tests/test_newcomer.py imports it)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``focalmix`` and ``python -m focalmix``: dispatch, and print user errors in one line."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("FOCALMIX_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        _dispatch(argv)
    except SIGTERMException as exc:
        # Lightning stops a fit on SIGTERM with a SystemExit of code None (0): a preempted run must not
        # look successful to a scheduler (PreemptionCheckpoint has saved last.ckpt and said so).
        # 130 after Ctrl-C, 143 after SIGTERM, as a shell reports them.
        from focalmix import faults

        raise SystemExit(128 + (signal.SIGINT if faults.stopped_by == "SIGINT" else signal.SIGTERM)) from exc
    except UsageError as exc:
        _fail(exc, exc.message, exc.hint, debug)
    except (ValueError, FileNotFoundError) as exc:
        if not (argv and argv[0] == "tune"):
            raise
        _fail(exc, str(exc).strip().splitlines()[0], None, debug)  # tune's documented bad-input errors


def _fail(exc: BaseException, message: str, hint: str | None, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
    print(f"focalmix: error: {message}", file=sys.stderr)
    if hint:
        print(f"  {hint.strip()}", file=sys.stderr)
    raise SystemExit(2)


def _dispatch(argv: list[str]) -> None:
    command = argv[0] if argv else None
    if command == "export":
        from focalmix.export import main as export_main

        export_main(argv[1:])
    elif command == "tune":
        quiet_console("--verbose" in argv)
        from focalmix.tune import main as tune_main

        tune_main(argv[1:])
    elif command == "report":
        ReportCLI(args=["validate", *argv[1:]])
    else:
        FocalMixCLI(args=argv)

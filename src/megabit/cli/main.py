"""`megabit` command line: a thin dispatcher over one module per subcommand.

Each subcommand module ``megabit.cli.<name>`` has ``build_parser() -> argparse.ArgumentParser``
and ``main(argv=None) -> int``, does no work at import and calls library functions only.
Errors a user can cause (bad paths, corrupt files, wrong shapes) are reported as one line on
stderr with exit status 2; no traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

# subcommand -> module (a name typed on the CLI, so it lives in one table)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("megabit.cli.demo", "run the bundled models on bundled samples"),
    "budget": ("megabit.cli.budget", "exact stored-bit budget of a preset or model"),
    "train-classifier": ("megabit.cli.train_classifier", "train the NQE classifier (BN then BSN)"),
    "train-teacher": ("megabit.cli.train_teacher", "train a float distillation teacher"),
    "eval-classifier": ("megabit.cli.eval_classifier", "evaluate a classifier on CIFAR-10"),
    "pack": ("megabit.cli.pack", "pack a model into an entropy-coded .mbit file"),
    "inspect": ("megabit.cli.inspect", "describe a packed .mbit file"),
    "compress": ("megabit.cli.compress", "compress images to .mbc bitstreams"),
    "decompress": ("megabit.cli.decompress", "decompress .mbc bitstreams to PNG"),
    "train-codec": ("megabit.cli.train_codec", "train the patch codec"),
    "eval-codec": ("megabit.cli.eval_codec", "rate-distortion evaluation of codecs"),
    "fmpq": ("megabit.cli.fmpq", "mixed-precision quantization of learned image codecs"),
    "export-c": ("megabit.cli.export_c", "export a packed model as C99"),
}


class UserError(Exception):
    """An error caused by input; printed as one line."""


def _available() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def _usage() -> str:
    lines = ["usage: megabit <command> [options]", "", "commands:"]
    for name, (_, help_) in _available().items():
        lines.append(f"  {name:<18} {help_}")
    lines.append("\nmegabit <command> --help for the options of one command")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from megabit import __version__

        print(f"megabit {__version__}")
        return 0
    cmd = argv[0]
    table = _available()
    if cmd not in table:
        print(f"megabit: error: unknown command {cmd!r} (see megabit --help)", file=sys.stderr)
        return 2
    mod = importlib.import_module(table[cmd][0])
    return run_guarded(mod.main, argv[1:])


def run_guarded(fn, argv) -> int:
    """Run a subcommand; map user-caused errors to one line and exit 2."""
    try:
        return int(fn(argv) or 0)
    except KeyboardInterrupt:
        print("megabit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `megabit ... | head`: the reader left; not an error of ours (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (UserError, ValueError, OSError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"megabit: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``reslearn`` command line. Each subcommand is a small function over the library;
a user's mistake (``ValueError``, ``ReslearnError``, missing file) prints one line and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from . import __version__
from .errors import ReslearnError

Command = Callable[[argparse.Namespace], int | None]
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def subcommand(add: Callable[[argparse._SubParsersAction], None]):
    """Register a function that adds one subparser (and sets ``func``)."""
    _SUBCOMMANDS.append(add)
    return add


# --------------------------------------------------------------------------- models / summary
@subcommand
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the registered models",
        description="List registered models with their parameters and multiply-adds at the "
        "paper's input size.",
    )
    p.add_argument("pattern", nargs="?", help="glob filter, e.g. 'resnet*' or '*plain*'")
    p.add_argument("--family", help="only this family (e.g. resnet, cifar_resnet)")
    p.add_argument("--markdown", action="store_true", help="print the README's model table")
    p.add_argument("--names", action="store_true", help="print the names only, one per line")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from .registry import list_models
    from .summary import human, summarize

    names = list_models(args.pattern, family=args.family)
    if args.names:
        print("\n".join(names))
        return 0
    if args.markdown:
        print("| model | family | input | params | mult-adds | paper |")
        print("|---|---|---|---:|---:|---|")
    for name in names:
        s = summarize(name)
        size = "x".join(map(str, s.input_size))
        if args.markdown:
            print(f"| `{name}` | {s.family} | {size} | {s.params:,} | {human(s.macs)} | {s.paper} |")
        else:
            print(f"{name:<24} {s.family:<16} {size:<12} {s.params:>14,} {human(s.macs):>9}")
    return 0


@subcommand
def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="paper-style layer table, parameters and multiply-adds of a model",
        description="Print the layer table of MODEL (stage, output size, blocks x count), its "
        "parameters and its multiply-adds (the papers' 'FLOPs'), counted by "
        "torch.utils.flop_counter.",
    )
    p.add_argument("model")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--shortcut", choices=["A", "B", "C"], help="shortcut option (Sec. 3.3)")
    p.add_argument("--variant", help="e.g. 'paper' or 'v1.5' for ImageNet bottlenecks")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_summary)


def _cmd_summary(args: argparse.Namespace) -> int:
    from .summary import format_summary, summarize

    kwargs = {
        k: v
        for k, v in (
            ("shortcut", args.shortcut),
            ("variant", args.variant),
            ("num_classes", args.num_classes),
            ("in_chans", args.in_chans),
        )
        if v is not None
    }
    s = summarize(args.model, input_size=args.input_size, **kwargs)
    print(json.dumps(s.to_dict(), indent=2) if args.json else format_summary(s))
    return 0


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslearn",
        description="Deep residual learning in PyTorch: models, recipes and the papers' "
        "experiments.",
    )
    parser.add_argument("--version", action="version", version=f"reslearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ReslearnError, ValueError, FileNotFoundError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"reslearn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reslearn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

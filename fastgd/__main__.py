"""``python -m fastgd``: run one of the course's demonstrations (``demo NAME``; no name lists
them), or compile the Numba kernels ahead of a first fit (``warmup``: e.g. for a CI job; Numba's cache serves the CPU model that compiled it).
"""

import argparse

from . import demos
from .kernels import backends, warmup
from ._text import summary, wrapped


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastgd", description=summary(__doc__))
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a demonstration (no name: list them)")
    demo.add_argument("name", nargs="?", choices=list(demos.DEMOS))
    demo.add_argument("--out", default="fastgd-demo", help="folder for the figures (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a shortened run")
    ahead = commands.add_parser("warmup", help="compile the Numba kernels now; later runs load them from the cache")
    ahead.add_argument("--backend", default="numba", choices=["numba", "cython", "numpy"])
    args = parser.parse_args(argv)
    if args.command == "warmup":
        if args.backend not in backends():
            parser.error(f"backend {args.backend!r} is not available here: {backends(reasons=True)[args.backend]}")
        for dtype, seconds in warmup(args.backend).items():
            print(f"{args.backend} {dtype}: ready in {seconds:.1f} s")
        return
    if args.name is None:
        for name, function in demos.DEMOS.items():
            print(wrapped(summary(function.__doc__), indent=12, first=f"{name}  "))
        print(f"\nRun one: {parser.prog} demo NAME [--out DIR] [--quick]")
        return
    try:
        out = demos.figure_folder(args.out)
    except OSError as error:
        demo.error(f"argument --out: cannot write figures into {args.out!r}: {error.strerror or error}")
    demos.run(args.name, out, args.quick)


if __name__ == "__main__":
    main()

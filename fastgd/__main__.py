"""``python -m fastgd demo [NAME]``: run one of the course's demonstrations, or list them."""

import argparse

from . import demos
from ._text import summary, wrapped


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastgd", description=summary(__doc__))
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a demonstration (no name: list them)")
    demo.add_argument("name", nargs="?", choices=list(demos.DEMOS))
    demo.add_argument("--out", default="fastgd-demo", help="folder for the figures (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a shortened run")
    args = parser.parse_args(argv)
    if args.name is None:
        for name, function in demos.DEMOS.items():
            print(wrapped(summary(function.__doc__), indent=12, first=f"{name}  "))
        return
    demos.run(args.name, args.out, args.quick)


if __name__ == "__main__":
    main()

"""``python -m fastgd.benchmarks``: throughput of every backend and peer against the NumPy
reference, and time to accuracy, in one run; a Markdown report (the tables, the machine, the
command and the date), a JSON of every raw number and a PNG chart.

``--quick`` measures 3 rounds on a tenth of the data, with shorter pauses and rounds
(``throughput.measure``): about a minute once compiled (two with PyTorch and JAX
installed); the full run, about twenty. Warm-up (compilation) is never timed, and its
seconds are printed at the end; a bar on stderr names the cell, the system and whether it
warms up or is timed, refreshed every few seconds (a line every 5 s where stderr is not a
terminal). Threads: one for every system by default
(``--threads all`` for every core; ``--threads 1 all`` measures both, side by side in
each round, and adds each system's speed-up). A system measured with T threads runs in
a process that may use T cores only (CPU affinity); each cell's "cores used", CPU
time over wall time, shows how many it kept busy, and a warning names any cell above
its threads by more than 10%.
"""

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import fastgd
from fastgd._text import summary
from . import accuracy, throughput
from .affinity import AVAILABLE, cores_for, pinned, usable_cores
from .peers import PEERS
from .workloads import MODES, WORKLOADS


# The lines around the headline table that --readme replaces.
HEADLINE = ("<!-- headline: written by the benchmark run (--readme) -->", "<!-- end of headline -->")

def chart(results, tta, path, title, workloads=()):
    """Throughput relative to the reference per cell (log scale, each bar labelled with its ratio), and
    validation accuracy against training time with the target marked; ``title`` above both, the
    ``workloads`` (one line each) below."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator

    figure = Figure(figsize=(14 if tta else 9.5, 5.6), layout="constrained")
    figure.suptitle(title)
    left, right = figure.subplots(1, 2, width_ratios=[2, 1]) if tta else (figure.subplots(), None)
    cells = list(dict.fromkeys((r["workload"], r["mode"]) for r in results))
    systems = list(dict.fromkeys(r["system"] for r in results))
    width = 0.8 / len(systems)
    threads = min(r["threads"] for r in results)
    for i, system in enumerate(systems):
        ratios = [next((r["ratio_to_reference"] for r in results if (r["workload"], r["mode"]) == cell
                        and r["system"] == system and r["threads"] == threads), 0) for cell in cells]
        bars = left.bar([c + i * width for c in range(len(cells))], ratios, width, label=system, zorder=2)
        left.bar_label(bars, [_ratio(ratio) for ratio in ratios], rotation=90, fontsize=6, padding=2)
    left.set_xticks([c + 0.4 - width / 2 for c in range(len(cells))], [f"{w}\n{m}" for w, m in cells], fontsize=8)
    left.set(yscale="log", xlabel="workload and training mode", ylabel="samples/s relative to the NumPy reference",
             title=f"training throughput against the NumPy reference ({threads} thread{'s' * (threads > 1)})")
    low, high = left.get_ylim()
    left.set_ylim(low, high * 4)  # room for the labels above the tallest bars
    _readable_log_ticks(left.yaxis)
    left.yaxis.set_minor_locator(LogLocator(subs="all"))
    left.grid(axis="y", which="major", color="0.9", zorder=0)
    left.axhline(1, color="k", linewidth=0.5)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    if tta:
        _accuracy_chart(right, tta)
    if workloads:
        figure.supxlabel("\n".join(workloads), fontsize=8, x=0.01, horizontalalignment="left")
    figure.savefig(path, dpi=100)
    return figure


def _ratio(ratio):
    """A bar's label: its ratio to the reference, to two significant digits ("" for a missing bar)."""
    if not ratio:
        return ""
    return f"{ratio:.2g}x" if ratio < 99.5 else f"{ratio:,.0f}x"


def _readable_log_ticks(axis):
    """Major ticks of a log axis at 1, 2 and 5 times each power of ten, labelled as plain numbers
    (0.05, 2, 500); minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _accuracy_chart(axes, tta):
    """Validation accuracy against training seconds, per batch size, for the first backend: each
    batch size with its own marker and line style, later (thinner) lines drawn over earlier ones."""
    backend = fastgd.backends()[0]
    for i, r in enumerate(r for r in tta if r["backend"] == backend):
        seconds, _, accuracies = zip(*r["curve"])
        axes.plot(seconds, accuracies, label=f"batch {r['batch_size']}", marker="osD^v"[i % 5], markersize=4,
                  markerfacecolor="none" if i % 2 else None, linestyle=["-", "--", ":", "-."][i % 4],
                  linewidth=2.4 - 0.3 * i, zorder=2 + i)
    target = tta[0]["target"]
    axes.axhline(target, color="k", linewidth=0.8, linestyle="--", label=f"target {target:g}")
    axes.set(xscale="log", xlabel="training seconds (log scale)", ylabel="validation accuracy",
             title=f"time to accuracy, textbook data ({backend})")
    _readable_log_ticks(axes.xaxis)
    axes.legend(fontsize=8, loc="lower right")


def header(machine, command, date, quick, rounds, scale, threads):
    """The report's first lines: what run it is, the command, the date, the machine, the versions and
    the settings the figures hold for."""
    versions = ", ".join(f"{name} {v}" for name, v in machine["versions"].items() if v)
    kind = "a quick run (fewer rounds on fewer rows: noisier than a full run)" if quick else "a full run"
    return [f"# fastgd benchmarks: {kind}", "",
            f"Written by `{command}` on {date}.", "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores. Versions: {versions}.", "",
            f"Settings: {rounds} rounds per cell (median), {' and '.join(map(str, threads))} thread(s) per "
            f"system, each on as many cores (CPU affinity), rows scaled by {scale:g}; "
            "% of GEMM is against the best GEMM rate measured in each cell's rounds; cores used is the CPU "
            "time of the system's process over the wall time of its timed epochs.", ""]


def chart_title(machine, date, quick, rounds, scale):
    """The chart's title: full or quick run, with its rounds and rows, the machine and the date."""
    kind = "quick run" if quick else "full run"
    return f"fastgd benchmarks, {kind} ({rounds} rounds, rows x{scale:g}): {machine['cpu']}, {date}"


def over_threads_warning(results):
    """A sentence naming every cell whose system kept more cores busy than its threads allowed, or ''."""
    cells = [f"{r['workload']} {r['mode']} {r['system']} ({r['cores_used']:.2f} cores at {r['threads']}T)"
             for r in throughput.over_threads(results)]
    if not cells:
        return ""
    return (f"Warning: more cores used than threads allowed (by over "
            f"{throughput.CORES_USED_MARGIN - 1:.0%}) in: " + "; ".join(cells) + ".")


def _has_headline(path):
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return False
    return HEADLINE[0] in lines and HEADLINE[1] in lines[lines.index(HEADLINE[0]):]


def write_headline(path, table):
    """Replace the lines between the ``HEADLINE`` markers of the Markdown file ``path`` with ``table``."""
    text = Path(path).read_text()
    start, end = text.index(HEADLINE[0] + "\n") + len(HEADLINE[0]) + 1, text.index("\n" + HEADLINE[1])
    Path(path).write_text(text[:start] + table + text[end:])


def main(argv=None, prog="python -m fastgd.benchmarks"):
    parser = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="3 rounds on a tenth of the data, short pauses")
    parser.add_argument("--rounds", type=int, help="rounds per cell (default 5, quick 3)")
    parser.add_argument("--scale", type=float, help="fraction of each workload's rows (default 1, quick 0.1)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--backends", nargs="+", default=fastgd.backends(), choices=list(throughput.BACKENDS))
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--threads", nargs="+", default=["1"],
                        help="threads for every system: numbers or 'all' (every core this process may use); "
                             "several are measured side by side")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the time-to-accuracy runs")
    parser.add_argument("--out", default="fastgd-benchmarks",
                        help="folder for benchmarks.md, benchmarks.json and benchmarks.png (default: %(default)s)")
    parser.add_argument("--readme", type=Path,
                        help="a Markdown file whose headline table (between the lines '" + HEADLINE[0] + "' and '"
                             + HEADLINE[1] + "') the run replaces with its own")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.readme is not None and not _has_headline(args.readme):
        parser.error(f"--readme: {args.readme} has no headline table between the lines {HEADLINE[0]!r} and "
                     f"{HEADLINE[1]!r}")
    rounds = args.rounds or (3 if args.quick else 5)
    scale = args.scale or (0.1 if args.quick else 1.0)
    usable = usable_cores()
    threads = sorted({len(usable) if t == "all" else int(t) for t in args.threads})
    if not AVAILABLE:
        print("note: no CPU affinity on this platform: threads are held by each library's settings only",
              file=sys.stderr)
    elif threads[-1] > len(usable):
        print(f"note: {threads[-1]} threads asked, but this process may run on {len(usable)} cores "
              f"({', '.join(map(str, usable))}): more threads than cores share them", file=sys.stderr)
    backends = ["numpy"] + [b for b in args.backends if b != "numpy"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    workloads = [WORKLOADS[w] for w in args.workloads]
    print(f"{len(workloads) * len(MODES)} cells ({', '.join(args.workloads)} x {', '.join(MODES)}), each with "
          f"{', '.join(backends + args.peers)}: a warm-up epoch (not timed; a first Numba fit compiles its kernels, "
          f"tens of seconds once per machine), then {rounds} timed round{'s' * (rounds > 1)}"
          f"{'' if args.no_accuracy else '; then the time-to-accuracy runs'}.", file=sys.stderr, flush=True)
    results, skipped = throughput.measure(workloads, backends, args.peers, rounds, threads, scale,
                                          cool_down=0.05 if args.quick else throughput.COOL_DOWN,
                                          least=0.05 if args.quick else throughput.LEAST)
    max_epochs, max_seconds = (30, 5.0) if args.quick else (200, 20.0)
    with pinned(cores_for(threads[0])):
        tta = [] if args.no_accuracy else accuracy.time_to_accuracy(
            backends, max_epochs=max_epochs, max_seconds=max_seconds, threads=threads[0])
    machine = throughput.machine()
    date = datetime.date.today().isoformat()
    warning = over_threads_warning(results)
    described = [WORKLOADS[w].describe(scale) for w in args.workloads]
    try:
        chart(results, tta, out / "benchmarks.png", chart_title(machine, date, args.quick, rounds, scale), described)
        figure = ["![throughput against the NumPy reference, and time to accuracy](benchmarks.png)", ""]
    except ImportError:
        print("(no chart: matplotlib is not installed; pip install matplotlib)")
        figure = []
    report = [*header(machine, " ".join([prog, *map(shlex.quote, argv)]), date, args.quick, rounds, scale, threads),
              "Workloads (SGD, L2 1e-4; mini-batch 64 and stochastic train on the rows given):", "",
              *[f"- {line}" for line in described], "", *figure,
              "## In short", "",
              "Samples per second of fastgd's fastest backend and of the fastest peer, per cell:", "",
              throughput.headline(results), "",
              "## Throughput", "", throughput.table(results), ""]
    if warning:
        report += [f"**{warning}**", ""]
    if skipped:
        report += ["Skipped peers: " + "; ".join(f"{peer} ({why})" for peer, why in skipped.items()), ""]
    if tta:
        report += ["## Time to accuracy", "",
                   f"Time to 0.94 validation accuracy on the textbook data (training seconds, SGD 0.05; each run "
                   f"stops after {max_epochs} epochs or {max_seconds:g} s of training):", "", accuracy.table(tta), ""]
    text = "\n".join(report)
    print(text)
    (out / "benchmarks.md").write_text(text)
    with open(out / "benchmarks.json", "w") as f:
        json.dump({"machine": machine, "settings": {"rounds": rounds, "scale": scale, "threads": threads},
                   "throughput": results, "skipped": skipped, "time_to_accuracy": tta}, f, indent=1)
    if args.readme is not None:
        write_headline(args.readme, throughput.headline(results))
    warmups = {}
    for r in results:
        warmups[r["system"]] = warmups.get(r["system"], 0.0) + r["warmup_s"]
    print(f"\nwritten to {out.resolve()} in {time.perf_counter() - start:.0f} s, of which warm-up (compilation "
          "included; in no figure): " + ", ".join(f"{system} {seconds:.1f} s" for system, seconds in warmups.items()))
    if warning:
        print(warning, file=sys.stderr)
    return results


if __name__ == "__main__":
    main()

"""``python -m benchmarks``: throughput of every backend and peer against the NumPy reference,
and time to accuracy, in one run; a table, a JSON of every raw number and PNG charts.

``--quick`` measures 3 rounds on a tenth of the data, with a shorter pause before
each timed epoch: under a minute once compiled (more with PyTorch and JAX
installed); the full run, under ten. Warm-up (compilation) is never timed, and its
seconds are printed at the end. Threads: one for every system by default
(``--threads all`` for every core; ``--threads 1 all`` measures both, side by side in
each round, and adds each system's speed-up). A system measured with T threads runs in
a process that may use T cores only (CPU affinity); each cell's "cores used", CPU
time over wall time, shows how many it kept busy, and a warning names any cell above
its threads by more than 10%.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import fastgd
from fastgd._text import summary
from benchmarks import accuracy, throughput
from benchmarks.affinity import AVAILABLE, cores_for, pinned, usable_cores
from benchmarks.peers import PEERS
from benchmarks.workloads import WORKLOADS


def chart(results, tta, path):
    """Throughput relative to the reference per cell (log scale), and validation accuracy against
    training time with the target marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14 if tta else 9.5, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[2, 1]) if tta else (figure.subplots(), None)
    cells = list(dict.fromkeys((r["workload"], r["mode"]) for r in results))
    systems = list(dict.fromkeys(r["system"] for r in results))
    width = 0.8 / len(systems)
    threads = min(r["threads"] for r in results)
    for i, system in enumerate(systems):
        ratios = [next((r["ratio_to_reference"] for r in results if (r["workload"], r["mode"]) == cell
                        and r["system"] == system and r["threads"] == threads), 0) for cell in cells]
        left.bar([c + i * width for c in range(len(cells))], ratios, width, label=system)
    left.set_xticks([c + 0.4 - width / 2 for c in range(len(cells))], [f"{w}\n{m}" for w, m in cells], fontsize=8)
    left.set(yscale="log", ylabel="samples/s relative to the NumPy reference",
             title=f"training throughput against the NumPy reference ({threads} thread{'s' * (threads > 1)})")
    left.axhline(1, color="k", linewidth=0.5)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    if tta:
        _accuracy_chart(right, tta)
    figure.savefig(path, dpi=100)
    return figure


def _accuracy_chart(axes, tta):
    """Validation accuracy against training seconds, per batch size, for the first backend."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    backend = fastgd.backends()[0]
    for i, r in enumerate(r for r in tta if r["backend"] == backend):
        seconds, _, accuracies = zip(*r["curve"])
        axes.plot(seconds, accuracies, label=f"batch {r['batch_size']}", marker="o", markersize=3,
                  linestyle=["-", "--", ":", "-."][i % 4], linewidth=2.4 - 0.3 * i)
    target = tta[0]["target"]
    axes.axhline(target, color="k", linewidth=0.8, linestyle="--", label=f"target {target:g}")
    axes.set(xscale="log", xlabel="training seconds (log scale)", ylabel="validation accuracy",
             title=f"time to accuracy, textbook data ({backend})")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.legend(fontsize=8, loc="lower right")


def header(machine, rounds, scale, threads):
    """The report's first lines: the machine, the versions and the settings the figures hold for."""
    versions = ", ".join(f"{name} {v}" for name, v in machine["versions"].items() if v)
    return [f"Machine: {machine['cpu']}, {machine['cores']} cores. Versions: {versions}.",
            f"Settings: {rounds} rounds per cell (median), {' and '.join(map(str, threads))} thread(s) per "
            f"system, each on as many cores (CPU affinity), rows scaled by {scale}; "
            "% of GEMM is against the best GEMM rate measured in each cell's rounds; cores used is the CPU "
            "time of the system's process over the wall time of its timed epochs.", ""]


def over_threads_warning(results):
    """A sentence naming every cell whose system kept more cores busy than its threads allowed, or ''."""
    cells = [f"{r['workload']} {r['mode']} {r['system']} ({r['cores_used']:.2f} cores at {r['threads']}T)"
             for r in throughput.over_threads(results)]
    if not cells:
        return ""
    return (f"Warning: more cores used than threads allowed (by over "
            f"{throughput.CORES_USED_MARGIN - 1:.0%}) in: " + "; ".join(cells) + ".")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="3 rounds on a tenth of the data, short pauses")
    parser.add_argument("--rounds", type=int, help="rounds per cell (default 5, quick 3)")
    parser.add_argument("--scale", type=float, help="fraction of each workload's rows (default 1, quick 0.1)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--backends", nargs="+", default=fastgd.backends(), choices=["numpy", "numba", "cython"])
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--threads", nargs="+", default=["1"],
                        help="threads for every system: numbers or 'all' (every core this process may use); "
                             "several are measured side by side")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the time-to-accuracy runs")
    parser.add_argument("--out", default="benchmarks/results", help="folder for results.json, results.md, results.png")
    args = parser.parse_args(argv)
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
    results, skipped = throughput.measure(workloads, backends, args.peers, rounds, threads, scale,
                                          cool_down=0.05 if args.quick else throughput.COOL_DOWN)
    max_epochs, max_seconds = (30, 5.0) if args.quick else (200, 20.0)
    with pinned(cores_for(threads[0])):
        tta = [] if args.no_accuracy else accuracy.time_to_accuracy(
            backends, max_epochs=max_epochs, max_seconds=max_seconds, threads=threads[0])
    machine = throughput.machine()
    warning = over_threads_warning(results)
    report = [*header(machine, rounds, scale, threads), "Throughput:", "", throughput.table(results), ""]
    if warning:
        report += [f"**{warning}**", ""]
    if skipped:
        report += ["Skipped peers: " + "; ".join(f"{peer} ({why})" for peer, why in skipped.items()), ""]
    if tta:
        report += [f"Time to 0.94 validation accuracy on the textbook data (training seconds, SGD 0.05; each run "
                   f"stops after {max_epochs} epochs or {max_seconds:g} s of training):", "", accuracy.table(tta), ""]
    text = "\n".join(report)
    print(text)
    (out / "results.md").write_text(text)
    with open(out / "results.json", "w") as f:
        json.dump({"machine": machine, "settings": {"rounds": rounds, "scale": scale, "threads": threads},
                   "throughput": results, "skipped": skipped, "time_to_accuracy": tta}, f, indent=1)
    try:
        chart(results, tta, out / "results.png")
    except ImportError:
        print("(no chart: matplotlib is not installed; pip install matplotlib)")
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

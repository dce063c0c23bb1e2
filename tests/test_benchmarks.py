"""The benchmark command runs end to end (tiny sizes) and writes a well-formed report."""

import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import fastgd
from fastgd.benchmarks import progress
from fastgd.benchmarks.__main__ import HEADLINE, chart, main, over_threads_warning
from fastgd.benchmarks.throughput import headline as headline_table
from conftest import BACKENDS
from figures import assert_says_what_it_shows, described

# The module each peer imports: the peer is installed when it can be found.
PEER_MODULES = {"scikit-learn": "sklearn", "torch": "torch", "jax-step": "jax", "jax-scan": "jax"}
# The backends this run tests, and the reference, which every benchmark runs.
RUN = [name for name in fastgd.kernels.PREFERENCE if name in BACKENDS or name == "numpy"]


def test_quick_run_writes_finite_positive_ratios(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# a page\n\n{HEADLINE[0]}\nan old table\n{HEADLINE[1]}\n\nthe end\n")
    main(["--quick", "--scale", "0.01", "--rounds", "1", "--backends", *RUN, "--peers", "scikit-learn",
          "--out", str(tmp_path), "--readme", str(readme)])
    report = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(report) == {"machine", "settings", "throughput", "skipped", "time_to_accuracy"}
    systems = set(RUN) | {"scikit-learn"}
    cells = {(r["workload"], r["mode"]) for r in report["throughput"]}
    assert cells == {(w, m) for w in ("W1", "W2", "W3") for m in ("batch", "mini-batch 64", "stochastic")}
    for workload, mode in cells:
        rows = [r for r in report["throughput"] if (r["workload"], r["mode"]) == (workload, mode)]
        assert {r["system"] for r in rows} == systems
    from fastgd.benchmarks.workloads import WORKLOADS

    for r in report["throughput"]:
        for key in ("samples_per_s", "ratio_to_reference", "gflops", "gemm_fraction", "warmup_s", "cores_used"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["system"], key, r[key])
        assert r["affinity"] == report["machine"]["usable_cores"][:1] and len(r["cpu_times"]) == 1
        assert r["gflops"] == pytest.approx(r["samples_per_s"] * WORKLOADS[r["workload"]].flops_per_sample / 1e9)
        assert r["gemm_fraction"] == pytest.approx(r["gflops"] / r["gemm_gflops"])
    assert {r["backend"] for r in report["time_to_accuracy"]} == set(RUN)
    assert report["machine"]["cores"] >= 1 and "blas" in report["machine"]
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000
    text = (tmp_path / "benchmarks.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# fastgd benchmarks: a quick run (fewer rounds on fewer rows: noisier than a full run)"
    assert re.fullmatch(r"Written by `python -m fastgd.benchmarks --quick --scale 0.01 --rounds 1 "
                        rf"--backends {' '.join(RUN)} --peers scikit-learn "
                        rf"--out {re.escape(str(tmp_path))} --readme {re.escape(str(readme))}` on "
                        r"\d{4}-\d\d-\d\d\.", lines[2])
    assert lines[4].startswith(f"Machine: {report['machine']['cpu']}, ") and "numpy " in lines[4]
    assert "- W2: [784, 256, 128, 10] ReLU/softmax, float32, 600 rows of synthetic data (stochastic: 50)" in lines
    assert "![throughput against the NumPy reference, and time to accuracy](benchmarks.png)" in lines
    assert "| 1T cores used | warm-up s |" in text and "| W3 | stochastic |" in text
    assert "each run stops after 30 epochs or 5 s of training" in text
    headline = headline_table(report["throughput"])
    assert f"## In short\n\nSamples per second of fastgd's fastest backend and of the fastest peer, per cell:\n\n" \
           f"{headline}\n" in text
    assert readme.read_text() == f"# a page\n\n{HEADLINE[0]}\n{headline}\n{HEADLINE[1]}\n\nthe end\n"
    assert re.search(r"^\| W2 \| mini-batch 64 \| (cython|numba|numpy) [\d,]+ \| scikit-learn [\d,]+ \| \d+\.\d\dx \|$",
                     headline, re.M), headline
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"in \d+ s, of which warm-up \(compilation included; in no figure\): numpy \d+\.\d s, ", last)


def test_a_readme_without_a_headline_table_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "README.md").write_text("# no table here\n")
    for readme in (tmp_path / "README.md", tmp_path / "missing.md"):
        with pytest.raises(SystemExit) as exit:
            main(["--quick", "--readme", str(readme), "--out", str(tmp_path)])
        assert exit.value.code == 2 and f"--readme: {readme} has no headline table" in capsys.readouterr().err
    assert not (tmp_path / "benchmarks.json").exists()


def test_flops_per_sample_count_every_product_of_a_step():
    """[10, 64, 32, 3]: the forward products (2 W), the weight gradients (2 W) and the input
    gradients of every layer but the first (2 (W - W1)), with W = 640 + 2048 + 96 weights."""
    from fastgd.benchmarks.throughput import flop_rate
    from fastgd.benchmarks.workloads import WORKLOADS

    weights, first = 10 * 64 + 64 * 32 + 32 * 3, 10 * 64
    assert WORKLOADS["W1"].flops_per_sample == 2 * weights + 2 * weights + 2 * (weights - first) == 15_424
    assert WORKLOADS["W3"].flops_per_sample == 4 * (64 * 1024 + 1024) + 2 * 1024
    assert flop_rate(1_000, 15_424, 0.5) == 30_848_000


def test_a_table_of_two_thread_counts_gives_each_system_its_speed_up():
    from fastgd.benchmarks.throughput import table

    results = [{"workload": "W2", "mode": "batch", "system": system, "threads": threads, "samples_per_s": rate,
                "ratio_to_reference": rate / reference, "gflops": 1.0, "gemm_fraction": 0.5, "warmup_s": 0.1,
                "cores_used": 0.98 * threads}
               for system, rates in (("numpy", (100.0, 150.0)), ("cython", (300.0, 570.0)))
               for threads, rate, reference in zip((1, 2), rates, (100.0, 150.0))]
    head, rule, numpy, cython = table(results).splitlines()
    assert head.endswith("| 2T % of GEMM | 2T cores used | 2T / 1T | warm-up s |")
    assert len(rule.split("|")) == len(head.split("|"))
    assert numpy.endswith("| 1.50x | 0.10 |")
    assert cython.endswith("| 50% | 0.98 | 570 | 3.80x | 1.0 | 50% | 1.96 | 1.90x | 0.10 |")


def test_a_cell_that_kept_more_cores_busy_than_its_threads_is_named_in_a_warning():
    results = [{"workload": "W2", "mode": mode, "system": system, "threads": threads, "cores_used": used}
               for mode, system, threads, used in (("batch", "jax-scan", 1, 1.93), ("batch", "torch", 1, 1.09),
                                                   ("batch", "jax-scan", 2, 2.0), ("stochastic", "numba", 2, 2.3))]
    assert over_threads_warning(results) == ("Warning: more cores used than threads allowed (by over 10%) in: "
                                             "W2 batch jax-scan (1.93 cores at 1T); W2 stochastic numba (2.30 "
                                             "cores at 2T).")
    assert over_threads_warning(results[1:3]) == ""


class Epochs:
    """A system whose epochs take ``seconds`` of wall and half that of CPU time, each on ``cores``."""

    def __init__(self, seconds, cores):
        self.seconds, self.cores, self.calls = seconds, cores, 0

    def epoch(self):
        self.calls += 1
        return self.seconds, self.seconds / 2, self.cores


def test_a_round_repeats_an_epoch_too_short_to_time_and_takes_their_mean():
    from fastgd.benchmarks.throughput import timed_round

    short = Epochs(0.03, [0])
    assert timed_round(short, least=0.2) == (pytest.approx(0.03), pytest.approx(0.015), [0]) and short.calls == 7
    long = Epochs(0.5, [1, 0])
    assert timed_round(long, least=0.2) == (0.5, 0.25, [0, 1]) and long.calls == 1


def test_pinning_holds_every_thread_of_the_process_and_is_undone():
    from fastgd.benchmarks.affinity import AVAILABLE, pinned, process_cores, usable_cores

    if not AVAILABLE:
        pytest.skip("no CPU affinity on this platform")
    before, release = process_cores(), threading.Event()
    waiting = threading.Thread(target=release.wait)
    waiting.start()
    try:
        with pinned(usable_cores()[:1]):
            started = threading.Thread(target=release.wait)
            started.start()
            assert process_cores() == before[:1]
            assert os.sched_getaffinity(waiting.native_id) == os.sched_getaffinity(started.native_id) == {before[0]}
        assert process_cores() == before and os.sched_getaffinity(started.native_id) == set(before)
    finally:
        release.set()
    waiting.join()
    started.join()


@pytest.mark.parametrize("system", ["fastgd", *PEER_MODULES])
def test_a_one_thread_figure_comes_from_a_process_on_one_core(monkeypatch, system):
    """Every installed system's one-thread cells (W1, each mode) ran in a process held to one core by
    its CPU affinity and kept at most 1.1 cores busy. fastgd's run in this process, which gets its
    cores back after."""
    from fastgd.benchmarks import throughput
    from fastgd.benchmarks.affinity import process_cores
    from fastgd.benchmarks.workloads import WORKLOADS

    if system != "fastgd" and importlib.util.find_spec(PEER_MODULES[system]) is None:
        pytest.skip(f"{system} is not installed")
    monkeypatch.setattr(throughput, "gemm_rate", lambda dtype, repeats: 1e11)  # a second per round, not needed here
    systems = RUN if system == "fastgd" else [system]
    before = process_cores()
    results, skipped = throughput.measure(
        [WORKLOADS["W1"]], RUN if system == "fastgd" else ["numpy"],
        [] if system == "fastgd" else [system], rounds=2, thread_counts=[1], scale=0.1, progress=False, cool_down=0)
    assert not skipped and process_cores() == before
    ran = [r for r in results if r["system"] in systems]
    assert len(ran) == 3 * len(systems)
    for r in ran:
        assert r["affinity"] == before[:1], (r["system"], r["mode"], r["affinity"])
        assert 0 < r["cores_used"] <= throughput.CORES_USED_MARGIN, (r["system"], r["mode"], r["cores_used"])


def plain_log_tick_labels(axis):
    """The labels of a log axis's major ticks within its view."""
    low, high = sorted(axis.get_view_interval())
    ticks = [tick for tick in axis.get_majorticklocs() if low <= tick <= high]
    return axis.get_major_formatter().format_ticks(ticks)


def test_the_chart_says_what_it_compares(tmp_path):
    """The benchmark chart passes the demo figures' check, and a reader takes it in at a glance: the
    kind of run in its title, each bar's ratio written on it, log axes labelled with plain numbers
    at 1, 2 and 5 times each power of ten, and the workloads defined under it."""
    cells = [("W1", "batch"), ("W1", "stochastic")]
    results = [{"workload": w, "mode": m, "system": s, "threads": 1, "ratio_to_reference": r}
               for w, m in cells for s, r in (("numpy", 1.0), ("cython", 31.4), ("scikit-learn", 0.052))]
    tta = [{"backend": fastgd.backends()[0], "batch_size": size, "target": 0.94,
            "curve": [(0.01 * (i + 1), 1.0 / (i + 1), 0.5 + 0.1 * i) for i in range(5)]} for size in (1, 32, "full")]
    workloads = ["W1: [10, 64, 32, 3] ReLU/softmax, float64, 150 rows of the textbook data"]
    figure = chart(results, tta, tmp_path / "chart.png", "fastgd benchmarks, quick run (3 rounds, rows x0.1)",
                   workloads)
    assert_says_what_it_shows("benchmark chart", described(figure))
    assert figure.get_suptitle() == "fastgd benchmarks, quick run (3 rounds, rows x0.1)"
    assert figure.get_supxlabel() == workloads[0]
    throughput, accuracy = figure.axes
    assert throughput.get_title() == "training throughput against the NumPy reference (1 thread)"
    assert [t.get_text() for t in throughput.get_legend().get_texts()] == ["numpy", "cython", "scikit-learn"]
    assert [label.get_text() for label in throughput.texts] == ["1x", "1x", "31x", "31x", "0.052x", "0.052x"]
    labels = plain_log_tick_labels(throughput.yaxis)
    assert {"0.1", "0.2", "0.5", "1", "2", "5", "10", "20"} <= set(labels), labels
    assert all(re.fullmatch(r"\d+(\.\d+)?", label) for label in labels), labels  # no 10^k, no 1e+01
    assert accuracy.get_title() == f"time to accuracy, textbook data ({fastgd.backends()[0]})"
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["batch 1", "batch 32", "batch full",
                                                                         "target 0.94"]
    curves = accuracy.get_lines()[:3]
    assert all(len(line.get_xdata()) == 5 for line in curves)
    assert len({(line.get_marker(), line.get_linestyle()) for line in curves}) == 3
    assert curves[0].get_zorder() < curves[1].get_zorder() < curves[2].get_zorder()  # thinner ones on top
    assert plain_log_tick_labels(accuracy.xaxis) == ["0.01", "0.02", "0.05"]
    assert not [t.get_text() for t in accuracy.xaxis.get_minorticklabels() if t.get_text()]  # no crowded labels


def test_a_run_without_accuracy_charts_throughput_alone(tmp_path):
    import warnings

    results = [{"workload": "W1", "mode": "batch", "system": s, "threads": 1, "ratio_to_reference": r}
               for s, r in (("numpy", 1.0), ("cython", 3.0))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty legend would warn
        (throughput,) = chart(results, [], tmp_path / "chart.png", "fastgd benchmarks, full run").axes
    assert throughput.get_title().startswith("training throughput") and (tmp_path / "chart.png").exists()


def test_help_describes_the_run_in_whole_plain_sentences(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert description.startswith("python -m fastgd.benchmarks: throughput") and description.endswith("chart.")
    assert "``" not in description


def test_the_run_starts_from_any_folder(tmp_path):
    """The run is part of the installed package: no need to be in the repository's root."""
    done = subprocess.run([sys.executable, "-m", "fastgd.benchmarks", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    assert done.stdout.startswith("usage: python -m fastgd.benchmarks ")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_long_stage_shows_every_few_seconds_what_it_waits_for(monkeypatch):
    """Where stderr is not a terminal (a CI log, a pipe), the bar is a line every LOG_EVERY seconds,
    naming the stage and, once it lasts, what it waits for and for how long."""
    monkeypatch.setattr(progress, "LOG_EVERY", 0.1)
    monkeypatch.setattr(progress, "SLOW_AFTER", 0.2)
    log = io.StringIO()
    with progress.Progress(2, "throughput", "round", stream=log) as shown:
        shown.stage("W2 batch, numba 1T: warming up", slow=progress.compiling("float32"))
        time.sleep(0.7)
        shown.advance()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) >= 4
    waiting = [line for line in lines if re.fullmatch(
        r"throughput: 0/2 rounds \|\s+\| 00:00, W2 batch, numba 1T: warming up, compiling the Numba kernels for "
        r"float32 \(once per machine; cached after\) \d s", line)]
    assert len(waiting) >= 2, lines  # a line every LOG_EVERY seconds while it waits
    assert lines[-1].startswith("throughput: 1/2 rounds |")


def test_on_a_terminal_other_output_is_written_above_the_bar():
    screen = Terminal()
    with progress.Progress(1, "throughput", "round", stream=screen) as shown:
        shown.stage("W1 batch, numpy 1T: warming up")
        print("fastgd: compiling the Numba kernels", file=sys.stderr)
    assert "\rthroughput: 0/1 rounds" in screen.getvalue()
    assert "fastgd: compiling the Numba kernels\n" in screen.getvalue()
    assert "W1 batch, numpy 1T: warming up" in screen.getvalue()


def test_the_run_shows_nothing_when_told_not_to(capsys):
    with progress.Progress(1, "throughput", "round", enabled=False) as shown:
        shown.stage("W1 batch, numpy 1T: warming up")
        shown.advance()
    assert capsys.readouterr() == ("", "")

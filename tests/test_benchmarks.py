"""The benchmark command runs end to end (tiny sizes) and writes a well-formed report."""

import importlib.util
import json
import math
import os
import re
import threading
from pathlib import Path

import pytest

import fastgd

ROOT = Path(__file__).resolve().parents[1]
# The module each peer imports: the peer is installed when it can be found.
PEER_MODULES = {"scikit-learn": "sklearn", "torch": "torch", "jax-step": "jax", "jax-scan": "jax"}


@pytest.fixture
def benchmarks_main(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # the benchmarks live beside the tests, not in the package
    from benchmarks.__main__ import main

    return main


def test_quick_run_writes_finite_positive_ratios(benchmarks_main, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    benchmarks_main(["--quick", "--scale", "0.01", "--rounds", "1", "--peers", "scikit-learn", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report) == {"machine", "settings", "throughput", "skipped", "time_to_accuracy"}
    systems = set(fastgd.backends()) | {"scikit-learn"}
    cells = {(r["workload"], r["mode"]) for r in report["throughput"]}
    assert cells == {(w, m) for w in ("W1", "W2", "W3") for m in ("batch", "mini-batch 64", "stochastic")}
    for workload, mode in cells:
        rows = [r for r in report["throughput"] if (r["workload"], r["mode"]) == (workload, mode)]
        assert {r["system"] for r in rows} == systems
    from benchmarks.workloads import WORKLOADS

    for r in report["throughput"]:
        for key in ("samples_per_s", "ratio_to_reference", "gflops", "gemm_fraction", "warmup_s", "cores_used"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["system"], key, r[key])
        assert r["affinity"] == report["machine"]["usable_cores"][:1] and len(r["cpu_times"]) == 1
        assert r["gflops"] == pytest.approx(r["samples_per_s"] * WORKLOADS[r["workload"]].flops_per_sample / 1e9)
        assert r["gemm_fraction"] == pytest.approx(r["gflops"] / r["gemm_gflops"])
    assert {r["backend"] for r in report["time_to_accuracy"]} == set(fastgd.backends())
    assert report["machine"]["cores"] >= 1 and "blas" in report["machine"]
    assert (tmp_path / "results.png").stat().st_size > 10_000
    text = (tmp_path / "results.md").read_text()
    assert "| 1T cores used | warm-up s |" in text and "| W3 | stochastic |" in text
    assert "each run stops after 30 epochs or 5 s of training" in text
    assert text.startswith(f"Machine: {report['machine']['cpu']}, ") and "numpy " in text.splitlines()[0]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"in \d+ s, of which warm-up \(compilation included; in no figure\): numpy \d+\.\d s, ", last)


def test_flops_per_sample_count_every_product_of_a_step(benchmarks_main):
    """[10, 64, 32, 3]: the forward products (2 W), the weight gradients (2 W) and the input
    gradients of every layer but the first (2 (W - W1)), with W = 640 + 2048 + 96 weights."""
    from benchmarks.throughput import flop_rate
    from benchmarks.workloads import WORKLOADS

    weights, first = 10 * 64 + 64 * 32 + 32 * 3, 10 * 64
    assert WORKLOADS["W1"].flops_per_sample == 2 * weights + 2 * weights + 2 * (weights - first) == 15_424
    assert WORKLOADS["W3"].flops_per_sample == 4 * (64 * 1024 + 1024) + 2 * 1024
    assert flop_rate(1_000, 15_424, 0.5) == 30_848_000


def test_a_table_of_two_thread_counts_gives_each_system_its_speed_up(benchmarks_main):
    from benchmarks.throughput import table

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


def test_a_cell_that_kept_more_cores_busy_than_its_threads_is_named_in_a_warning(benchmarks_main):
    from benchmarks.__main__ import over_threads_warning

    results = [{"workload": "W2", "mode": mode, "system": system, "threads": threads, "cores_used": used}
               for mode, system, threads, used in (("batch", "jax-scan", 1, 1.93), ("batch", "torch", 1, 1.09),
                                                   ("batch", "jax-scan", 2, 2.0), ("stochastic", "numba", 2, 2.3))]
    assert over_threads_warning(results) == ("Warning: more cores used than threads allowed (by over 10%) in: "
                                             "W2 batch jax-scan (1.93 cores at 1T); W2 stochastic numba (2.30 "
                                             "cores at 2T).")
    assert over_threads_warning(results[1:3]) == ""


def test_pinning_holds_every_thread_of_the_process_and_is_undone(benchmarks_main):
    from benchmarks.affinity import AVAILABLE, pinned, process_cores, usable_cores

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
def test_a_one_thread_figure_comes_from_a_process_on_one_core(benchmarks_main, monkeypatch, system):
    """Every installed system's one-thread cells (W1, each mode) ran in a process held to one core by
    its CPU affinity and kept at most 1.1 cores busy. fastgd's run in this process, which gets its
    cores back after."""
    from benchmarks import throughput
    from benchmarks.affinity import process_cores
    from benchmarks.workloads import WORKLOADS

    if system != "fastgd" and importlib.util.find_spec(PEER_MODULES[system]) is None:
        pytest.skip(f"{system} is not installed")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setattr(throughput, "gemm_rate", lambda dtype, repeats: 1e11)  # a second per round, not needed here
    systems = fastgd.backends() if system == "fastgd" else [system]
    before = process_cores()
    results, skipped = throughput.measure(
        [WORKLOADS["W1"]], fastgd.backends() if system == "fastgd" else ["numpy"],
        [] if system == "fastgd" else [system], rounds=2, thread_counts=[1], scale=0.1, progress=False, cool_down=0)
    assert not skipped and process_cores() == before
    ran = [r for r in results if r["system"] in systems]
    assert len(ran) == 3 * len(systems)
    for r in ran:
        assert r["affinity"] == before[:1], (r["system"], r["mode"], r["affinity"])
        assert 0 < r["cores_used"] <= throughput.CORES_USED_MARGIN, (r["system"], r["mode"], r["cores_used"])


def test_the_chart_says_what_it_compares(benchmarks_main, tmp_path):
    from benchmarks.__main__ import chart

    cells = [("W1", "batch"), ("W1", "stochastic")]
    results = [{"workload": w, "mode": m, "system": s, "threads": 1, "ratio_to_reference": r}
               for w, m in cells for s, r in (("numpy", 1.0), ("cython", 3.0), ("scikit-learn", 0.5))]
    tta = [{"backend": fastgd.backends()[0], "batch_size": size, "target": 0.94,
            "curve": [(0.01 * (i + 1), 1.0 / (i + 1), 0.5 + 0.1 * i) for i in range(5)]} for size in (1, 32, "full")]
    throughput, accuracy = chart(results, tta, tmp_path / "chart.png").axes
    assert throughput.get_title() == "training throughput against the NumPy reference (1 thread)"
    assert [t.get_text() for t in throughput.get_legend().get_texts()] == ["numpy", "cython", "scikit-learn"]
    assert accuracy.get_title() == f"time to accuracy, textbook data ({fastgd.backends()[0]})"
    assert accuracy.get_ylabel() == "validation accuracy"
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["batch 1", "batch 32", "batch full",
                                                                         "target 0.94"]
    assert all(len(line.get_xdata()) == 5 for line in accuracy.get_lines()[:3])
    assert not [t.get_text() for t in accuracy.xaxis.get_minorticklabels() if t.get_text()]  # no crowded labels


def test_a_run_without_accuracy_charts_throughput_alone(benchmarks_main, tmp_path):
    import warnings

    from benchmarks.__main__ import chart

    results = [{"workload": "W1", "mode": "batch", "system": s, "threads": 1, "ratio_to_reference": r}
               for s, r in (("numpy", 1.0), ("cython", 3.0))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty legend would warn
        (throughput,) = chart(results, [], tmp_path / "chart.png").axes
    assert throughput.get_title().startswith("training throughput") and (tmp_path / "chart.png").exists()


def test_help_describes_the_run_in_whole_plain_sentences(benchmarks_main, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        benchmarks_main(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert description.startswith("python -m benchmarks: throughput") and description.endswith("charts.")
    assert "``" not in description

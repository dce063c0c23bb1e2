"""The worked examples in examples/ run as written and reach what they report."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name):
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_digits_stop_early_and_reach_high_test_accuracy():
    out = run("digits.py")
    assert float(re.search(r"test accuracy (\d\.\d+)", out)[1]) > 0.95, out
    epochs, best = map(int, re.search(r"stopped early after (\d+) epochs: .* since epoch (\d+),", out).groups())
    assert best < epochs < 200 and "train longer" not in out, out


def test_regression_explains_the_target_and_reports_a_linear_model_beside_it():
    out = run("regression.py")
    ours, linear = map(float, re.search(r"test R² (-?\d\.\d+) \(a linear model: (-?\d\.\d+)\)", out).groups())
    assert ours > 0.3 and linear > 0.3, out

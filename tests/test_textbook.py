"""The course's textbook run reproduces its published log digit for digit."""

import pytest

import fastgd
from conftest import BACKENDS

# Epoch: (train loss, train accuracy, validation loss, validation accuracy), as published.
PUBLISHED = {
    1: (0.6263, 0.807, 0.6307, 0.804),
    8: (0.2562, 0.919, 0.2689, 0.916),
    40: (0.1533, 0.959, 0.1972, 0.940),
    80: (0.1014, 0.975, 0.1887, 0.948),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_textbook_run_reproduces_published_log(textbook_data, backend):
    X_train, X_test, y_train, y_test = textbook_data
    net = fastgd.MLP([10, 64, 32, 3], backend=backend, random_state=42)
    history = net.fit(X_train, y_train, epochs=80, batch_size=64, optimizer=fastgd.SGD(lr=0.05), l2=1e-4,
                      validation_data=(X_test, y_test)).history
    for epoch, (loss, acc, val_loss, val_acc) in PUBLISHED.items():
        i = epoch - 1
        got = (f"{history['train_loss'][i]:.4f}", f"{history['train_accuracy'][i]:.3f}",
               f"{history['val_loss'][i]:.4f}", f"{history['val_accuracy'][i]:.3f}")
        assert got == (f"{loss:.4f}", f"{acc:.3f}", f"{val_loss:.4f}", f"{val_acc:.3f}"), f"epoch {epoch}"
    assert net.evaluate(X_test, y_test) == pytest.approx((history["val_loss"][-1], history["val_accuracy"][-1]))

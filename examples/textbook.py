"""The course's textbook run: a [10, 64, 32, 3] ReLU network, SGD(lr=0.05), batch 64, l2=1e-4, 80 epochs.

Prints the log at the epochs the course prints (1, 8, 16, ..., 80).
"""

import fastgd
from fastgd.datasets import textbook

X_train, X_test, y_train, y_test = textbook()
net = fastgd.MLP([10, 64, 32, 3], hidden="relu", output="softmax", random_state=42)
history = net.fit(X_train, y_train, epochs=80, batch_size=64, optimizer=fastgd.SGD(lr=0.05), l2=1e-4,
                  validation_data=(X_test, y_test)).history
print(f"backend: {net.backend_}")
for epoch in [1] + list(range(8, 81, 8)):
    i = epoch - 1
    print(f"Epoch {epoch}/80 | loss {history['train_loss'][i]:.4f} acc {history['train_accuracy'][i]:.3f} "
          f"val_loss {history['val_loss'][i]:.4f} val_acc {history['val_accuracy'][i]:.3f}")

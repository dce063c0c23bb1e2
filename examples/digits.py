"""Handwritten digits (scikit-learn's 8x8 images, 10 classes), end to end with fastgd.

Split off a test set, scale the pixels, choose the learning rate with the finder,
train with early stopping on a validation split, then report test accuracy.
Run: ``python examples/digits.py`` (about ten seconds).
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import fastgd

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.2, stratify=y_train, random_state=0)
scaler = StandardScaler().fit(X_train)  # fitted on the training rows only
X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))

net = fastgd.MLP([64, 128, 10], hidden="relu", output="softmax", random_state=0)
found = fastgd.lr_find(net, X_train, y_train, batch_size=32)  # leaves the model as it was
lr = found.suggestion
print(f"learning rate suggested by lr_find: {lr:.3g}")

# Momentum 0.9 makes steps ten times as long: a tenth of the steepest-descent rate.
# The validation loss creeps down for hundreds of epochs; a fall under min_delta is no progress.
stopping = fastgd.EarlyStopping(monitor="val_loss", patience=5, min_delta=1e-3)
history = net.fit(X_train, y_train, epochs=200, batch_size=32, optimizer=fastgd.SGD(lr=lr / 10, momentum=0.9),
                  l2=1e-4, validation_data=(X_val, y_val), callbacks=[stopping])
if stopping.stopped_epoch is not None:
    print(f"stopped early after {len(history.epoch)} epochs: the validation loss has not fallen by more than "
          f"{stopping.min_delta:g} since epoch {stopping.best_epoch + 1}, whose weights the model keeps")
else:
    print(f"trained all {len(history.epoch)} epochs; {fastgd.diagnose(history).message}")
loss, accuracy = net.evaluate(X_test, y_test)
print(f"test accuracy {accuracy:.3f} (loss {loss:.3f}) on {len(X_test)} digits")
print("confusions:", int(np.sum(net.predict(X_test) != y_test)))

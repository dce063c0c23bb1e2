"""Regression on scikit-learn's diabetes data (442 patients, 10 features): a one-unit identity
output trained on squared error, inputs and target standardised on the training rows, early
stopping on a validation split, and a linear model's test R² beside it for scale.

Run: ``python examples/regression.py`` (a few seconds).
"""

from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import fastgd

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.2, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
y_mean, y_std = y_train.mean(), y_train.std()

net = fastgd.MLP([10, 16, 1], hidden="relu", output="identity", random_state=0)  # identity output: mse loss
history = net.fit(X_train, (y_train - y_mean) / y_std, epochs=500, batch_size=32, optimizer=fastgd.Adam(lr=1e-3),
                  l2=0.1, validation_data=(X_val, (y_val - y_mean) / y_std),
                  callbacks=[fastgd.EarlyStopping(monitor="val_loss", patience=20)])
predicted = net.predict(X_test) * y_std + y_mean
linear = LinearRegression().fit(X_train, y_train).predict(X_test)
print(f"stopped after {len(history.epoch)} epochs; test R² {r2_score(y_test, predicted):.3f} "
      f"(a linear model: {r2_score(y_test, linear):.3f})")

"""Name -> integer code tables shared by the Python layer and every backend.

Kernels only ever see the integer codes; the names are for people.
"""

IDENTITY, RELU, SIGMOID, TANH, SOFTMAX = 0, 1, 2, 3, 4
ACTIVATIONS = {"identity": IDENTITY, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX}
HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "identity")

CROSS_ENTROPY, BINARY_CROSS_ENTROPY, MSE = 0, 1, 2
LOSSES = {"cross_entropy": CROSS_ENTROPY, "binary_cross_entropy": BINARY_CROSS_ENTROPY, "mse": MSE}
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "identity": "mse"}
# The output activations each loss may follow.
LOSS_OUTPUTS = {
    "cross_entropy": ("softmax",),
    "binary_cross_entropy": ("sigmoid",),
    "mse": ("identity", "sigmoid"),
}

SGD, MOMENTUM, ADAM, RMSPROP, ADAGRAD, LINE_SEARCH = 0, 1, 2, 3, 4, 5

# Columns of the layout table: one row per dense layer.
N_IN, N_OUT, ACTIVATION, W_OFFSET, B_OFFSET = 0, 1, 2, 3, 4

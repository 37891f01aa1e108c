"""Replace a hand-written NumPy forward/backward loop with fastbp's layer functions.

Both versions compute the loss and gradients of a 2-layer MLP with softmax
cross-entropy on a batch of digits; they agree to float64 rounding.

    python examples/numpy_to_fastbp.py
"""

import numpy as np

import fastbp as fb

X, y = fb.load_digits(dtype="float64")
X, y = X[:256], y[:256]
rng = np.random.default_rng(0)
W1 = rng.normal(0, 0.1, (64, 32))
b1 = np.zeros(32)
W2 = rng.normal(0, 0.1, (32, 10))
b2 = np.zeros(10)
n = X.shape[0]


# --- before: plain NumPy ------------------------------------------------------------
def numpy_step(X, y):
    A1 = X @ W1 + b1
    H1 = np.maximum(A1, 0)
    Z = H1 @ W2 + b2
    Z = Z - Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(P[np.arange(n), y]))
    dZ = P.copy()
    dZ[np.arange(n), y] -= 1
    dZ /= n                                  # (P - E) / n
    dW2 = H1.T @ dZ                          # dW = H^T dA
    db2 = dZ.sum(axis=0)                     # db = sum of dA over rows
    dH1 = dZ @ W2.T                          # dH = dA W^T
    dA1 = dH1 * (H1 > 0)                     # g'(A) from the output H
    dW1 = X.T @ dA1
    db1 = dA1.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


# --- after: fastbp's drop-in layer functions ----------------------------------------
def fastbp_step(X, y):
    H1 = fb.dense_forward(X, W1, b1, activation="relu")
    Z = fb.dense_forward(H1, W2, b2, activation="identity")
    loss, dZ = fb.softmax_cross_entropy(Z, y)
    dH1, dW2, db2 = fb.dense_backward(dZ, H1, W2, Z, activation="identity")
    _, dW1, db1 = fb.dense_backward(dH1, X, W1, H1, activation="relu")
    return loss, (dW1, db1, dW2, db2)


loss_np, grads_np = numpy_step(X, y)
loss_fb, grads_fb = fastbp_step(X, y)
print(f"loss numpy {loss_np:.12f}  fastbp {loss_fb:.12f}")
for name, a, b in zip(["dW1", "db1", "dW2", "db2"], grads_np, grads_fb):
    err = np.max(np.abs(a - b))
    print(f"{name}: max |numpy - fastbp| = {err:.2e}")
    assert np.allclose(a, b, rtol=1e-10, atol=1e-12), name
assert abs(loss_np - loss_fb) < 1e-12
print("same loss and gradients")

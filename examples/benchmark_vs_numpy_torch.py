"""Time one training step (forward, backward, SGD update) of the same MLP in
fastbp, plain NumPy and PyTorch (if installed); report medians.

    python examples/benchmark_vs_numpy_torch.py [--batch 128] [--hidden 256] [--repeats 50]
"""

import argparse
import time

import numpy as np

import fastbp as fb

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=128)
p.add_argument("--hidden", type=int, default=256)
p.add_argument("--repeats", type=int, default=50)
args = p.parse_args()

d_in, d_h, d_out, n = 784, args.hidden, 10, args.batch
rng = np.random.default_rng(0)
X = rng.normal(size=(n, d_in)).astype(np.float32)
y = rng.integers(0, d_out, n)
lr = np.float32(0.01)


def median_time(step, repeats=args.repeats):
    step()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


model = fb.MLP([d_in, d_h, d_out], dtype="float32", seed=0)
opt = fb.SGD(lr=0.01)
results = {"fastbp": median_time(lambda: model.train_on_batch(X, y, optimizer=opt))}

W1 = rng.normal(0, 0.05, (d_in, d_h)).astype(np.float32)
b1 = np.zeros(d_h, np.float32)
W2 = rng.normal(0, 0.05, (d_h, d_out)).astype(np.float32)
b2 = np.zeros(d_out, np.float32)


def numpy_step():
    H = np.maximum(X @ W1 + b1, 0)
    Z = H @ W2 + b2
    Z -= Z.max(1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(1, keepdims=True)
    P[np.arange(n), y] -= 1
    P /= n
    dH = (P @ W2.T) * (H > 0)
    W2[...] -= lr * (H.T @ P)
    b2[...] -= lr * P.sum(0)
    W1[...] -= lr * (X.T @ dH)
    b1[...] -= lr * dH.sum(0)


results["numpy"] = median_time(numpy_step)

try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    net = torch.nn.Sequential(torch.nn.Linear(d_in, d_h), torch.nn.ReLU(),
                              torch.nn.Linear(d_h, d_out))
    topt = torch.optim.SGD(net.parameters(), lr=0.01)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_step():
        topt.zero_grad()
        loss_fn(net(Xt), yt).backward()
        topt.step()

    results["torch"] = median_time(torch_step)

print(f"MLP [{d_in}, {d_h}, {d_out}], batch {n}, float32, median of {args.repeats} steps")
for name, t in results.items():
    print(f"{name:8s} {t * 1e6:9.1f} us/step   {results['fastbp'] / t:5.2f}x fastbp's speed"
          if name != "fastbp" else f"{name:8s} {t * 1e6:9.1f} us/step")

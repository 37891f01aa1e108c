"""Each way a step can use the threads, fit for fit, against the GEMM floor
(issue 16, item 3): the data behind ``fastbp._threads.step_threads``.

    python benchmarks/split_choice.py [--rounds R] [--optimizer sgd|adam]
                                      [--dtype float32|float64] SIZES

SIZES as for ``fastbp bench`` ("784-256-128-10:64,784-256-128-10:512").  For
each size, one epoch of ``fit`` (per step) with the step on one thread
(OpenBLAS's own threads for the products), split by blocks of W, and split
by the rows of its batch (each forced by setting the rule's constants),
and the floor, interleaved (``fastbp.bench.measure``), default threads,
wall time.  Prints each against the floor, the ratio rows / blocks of W,
2 packed / params (the rule's variable on 2 threads) and what the shipped
rule picks.
"""

import argparse
import os

os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import numpy as np

import fastbp as fb
from fastbp import _threads, bench
from fastbp._validation import n_params

#: (PARALLEL_MIN_FLOPS, SPLIT_MAX_PACKED) forcing each arrangement
WAYS = {"one thread": (float("inf"), 0.0), "blocks of W": (0.0, float("inf")),
        "batch rows": (0.0, 0.0)}


def _fit(widths, batch, n_batches, dtype, optimizer, way):
    model = fb.MLP(list(widths), activation="relu", dtype=dtype, seed=0)
    opt = (fb.Adam(lr=1e-4) if optimizer == "adam"
           else fb.SGD(lr=bench.LR, momentum=bench.MOMENTUM))
    X, y = bench._data(widths, batch * n_batches, dtype)
    shipped = (_threads.PARALLEL_MIN_FLOPS, _threads.SPLIT_MAX_PACKED)

    def run():
        _threads.PARALLEL_MIN_FLOPS, _threads.SPLIT_MAX_PACKED = WAYS[way]
        try:
            model.fit(X, y, epochs=1, batch_size=batch, optimizer=opt)
        finally:
            _threads.PARALLEL_MIN_FLOPS, _threads.SPLIT_MAX_PACKED = shipped
    run()
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="?", default="784-256-128-10:64,784-256-128-10:512")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args(argv)
    print(f"{args.optimizer}, {args.dtype}, threads {fb.get_num_threads()['numba']}, "
          f"{args.rounds} rounds; epoch per step / floor")
    for widths, batch in bench.parse_sizes(args.sizes):
        nb = bench.epoch_batches(widths, batch)
        impls = {"floor": (bench.make_floor(widths, batch, args.dtype), 1)}
        for way in WAYS:
            impls[way] = (_fit(widths, batch, nb, args.dtype, args.optimizer, way), nb)
        med = {k: float(np.median(v)) for k, v in bench.measure(impls, args.rounds,
                                                                0.3).items()}
        params = n_params(widths)
        packed = batch * _threads.pack_per_row(widths)
        ratios = "  ".join(f"{way} {med[way] / med['floor']:.3f}" for way in WAYS)
        print(f"{'-'.join(map(str, widths))} b{batch}: {ratios}  rows / blocks "
              f"{med['batch rows'] / med['blocks of W']:.3f}  2 packed / params "
              f"{2 * packed / params:.2f}  rule: {bench.step_arrangement(widths, batch)}",
              flush=True)


if __name__ == "__main__":
    main()

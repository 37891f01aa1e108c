"""The ``fastbp`` command."""

import argparse
import sys
import time

import numpy as np


def _train(args):
    import fastbp as fb

    if args.data:
        X, y = fb.load_data(args.data, args.target)
    else:
        X, y = fb.load_digits(dtype=args.dtype)
    Xtr, Xte, ytr, yte = fb.train_test_split(X, y, test_size=args.validation_split,
                                             seed=args.seed)
    n_classes = int(np.max(y)) + 1
    layers = [int(s) for s in args.layers.split(",") if s.strip()] if args.layers else []
    model = fb.MLP([X.shape[1], *layers, n_classes], activation=args.activation,
                   dtype=args.dtype, seed=args.seed)
    opt = fb.SGD(lr=args.lr, momentum=0.9) if args.optimizer == "sgd" else fb.Adam(lr=args.lr)
    print(f"{model}: {model.n_params} parameters, {Xtr.shape[0]} training rows, "
          f"{Xte.shape[0]} validation rows")
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        h = model.fit(Xtr, ytr, epochs=1, batch_size=args.batch_size, optimizer=opt,
                      validation_data=(Xte, yte))
        dt = time.perf_counter() - t0
        print(f"epoch {epoch:3d}  loss {h['loss'][0]:.4f}  acc {h['accuracy'][0]:.4f}  "
              f"val_loss {h['val_loss'][0]:.4f}  val_acc {h['val_accuracy'][0]:.4f}  "
              f"({dt * 1e3:.1f} ms)")
    if args.out:
        model.save(args.out)
        print(f"saved {args.out}")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="fastbp", description="Train dense networks fast.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an MLP classifier (built-in digits by default)")
    t.add_argument("--data", help=".npz, .npy or .csv file (default: built-in digits)")
    t.add_argument("--target", help="target column (name or index) or .npz array name")
    t.add_argument("--layers", default="128", help="hidden widths, e.g. 256,128")
    t.add_argument("--activation", default="relu")
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--validation-split", type=float, default=0.2)
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--out", help="save the trained model to this .npz file")
    t.set_defaults(func=_train)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"fastbp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Long work that stays responsive: Ctrl-C, progress and time-based checkpoints.

A compiled epoch is one call that Python cannot interrupt: a SIGINT that
arrives during it becomes a KeyboardInterrupt only when it returns.  So
``fit`` cuts each epoch into *slices* of whole batches and calls the
compiled epoch on consecutive slices ``perm[a:b]`` of the epoch's
permutation (``run_epoch``).  Each step sees the same rows, in the same
order, as in one call over ``perm``, so the parameters, optimizer state and
step count are bit-identical to an uncut epoch.  Slices are sized from
measured time (``Slicer``): a first slice of ``FIRST_FLOPS``, then about
``TARGET_SECONDS`` each, so that a Ctrl-C is seen and the progress bar moves
within a fraction of a second while the Python between two slices costs
a few tens of microseconds per ~0.1 s of compiled work.  An epoch of at most
``ONE_CALL_FLOPS`` runs as one call, as before.

While ``fit`` runs in the main thread, ``deferred`` replaces Python's
default SIGINT handler by one that only sets a flag; ``check`` (called
between slices and chunks) turns the flag into a KeyboardInterrupt at a
point where the model's state is consistent: the parameters of the last
complete step with the optimizer state and step count that belong to them.
A second Ctrl-C raises at once.

Where no handler can be installed (another thread, a user's own handler) or
none is (``train_on_batch``, sklearn's epoch loop), ``call_committing``
keeps a kernel's result when the KeyboardInterrupt is raised as the call
returns, so that the step count is still committed.
"""

import _signal
import math
import re
import signal
import threading
import time
from itertools import starmap

__all__ = ["EpochState", "Progress", "Slicer", "call_committing", "check", "deferred", "in_thread",
           "parse_every", "run_epoch"]

#: seconds one slice of an epoch should take (interrupt latency, progress)
TARGET_SECONDS = 0.1
#: estimated work (flop) of the first slice of a fit, before any measurement:
#: 0.1 s at 10 GFLOP/s, below what the slowest step measured here runs at
#: (tanh, 64-128-10 b32, one thread), ~10 ms for most.  It was 2e7, one batch
#: for mid-size networks: an epoch of 784-256-128-10 b512 then ran as slices
#: of 1, 4 and 3 batches, and each odd slice copied the parameters back
#: (docs/performance.md, "Issue 16, fifth round")
FIRST_FLOPS = 1e9
#: an epoch estimated at no more than this runs as one compiled call (0.2 s
#: at 10 GFLOP/s)
ONE_CALL_FLOPS = 2e9
#: a loss_and_grad estimated above this runs in a worker thread
THREAD_FLOPS = 5e8

#: the signal number as a plain int: ``deferred`` calls ``_signal``'s
#: functions, which ``signal``'s wrap in enum conversions (~10 us of each
#: ``fit`` call went to them)
_SIGINT = int(signal.SIGINT)

_pending = False
_depth = 0
#: False while a data-parallel fit defers: ranks agree on a Ctrl-C through
#: their step's all-reduce, so ``check`` must not raise on one rank alone
_raising = True


def _on_sigint(signum, frame):
    global _pending
    if _pending:  # a second Ctrl-C: the user insists
        _pending = False
        raise KeyboardInterrupt
    _pending = True


class deferred:
    """Context manager: while inside, SIGINT sets a flag that ``check``
    raises as KeyboardInterrupt.  Installed only in the main thread over
    Python's default handler (nested uses share one installation); a flag
    still set on a normal exit raises there, so no Ctrl-C is lost."""

    __slots__ = ("collective", "old")

    def __init__(self, collective=False):
        # collective: ``check`` does not raise inside (the caller polls
        # ``take`` at points every rank reaches together)
        self.collective = collective

    def __enter__(self):
        global _depth, _pending, _raising
        self.old = None
        if _depth:
            _depth += 1
        elif (threading.current_thread() is threading.main_thread()
              and _signal.getsignal(_SIGINT) is _signal.default_int_handler):
            _pending = False
            self.old = _signal.signal(_SIGINT, _on_sigint)
            _depth = 1
            _raising = not self.collective
        return self

    def __exit__(self, kind, exc, tb):
        global _depth, _pending, _raising
        if not _depth:
            return False
        _depth -= 1
        if _depth == 0 and self.old is not None:
            _signal.signal(_SIGINT, self.old)
            _raising = True
            if _pending and not self.collective:
                _pending = False
                if kind is None:
                    raise KeyboardInterrupt
        return False


def check():
    """Raise KeyboardInterrupt if a Ctrl-C arrived while deferred (not in a
    collective deferral)."""
    global _pending
    if _pending and _raising:
        _pending = False
        raise KeyboardInterrupt


def pending():
    """True if a deferred Ctrl-C waits to be raised (no reset)."""
    return _pending


def take():
    """Whether a deferred Ctrl-C was waiting; it no longer is."""
    global _pending
    was, _pending = _pending, False
    return was


def call_committing(kernel, args, commit):
    """``kernel(*args)``, with ``commit(result)`` run even when a
    KeyboardInterrupt is raised as the compiled call returns.

    The call runs inside ``list.extend`` over ``starmap``, in C: the result
    is in the list before the interpreter can raise, so on an interrupt
    either the kernel did not run or its result is committed.
    """
    box = []
    try:
        box.extend(starmap(kernel, (args,)))
    finally:
        if box:
            commit(box[0])
    return box[0]


def in_thread(fn, *args):
    """``fn(*args)`` in a worker thread while this one waits interruptibly.

    For a long compiled call (it must release the GIL) that changes no
    state the caller keeps: on KeyboardInterrupt the worker is abandoned
    with its buffers and finishes in the background."""
    out = []
    err = []

    def work():
        try:
            out.append(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            err.append(exc)

    t = threading.Thread(target=work, name="fastbp-work", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.05)
        check()
    if err:
        raise err[0]
    return out[0]


def flops_per_row(widths):
    """Training flop of one row (forward 2, backward 4 per weight)."""
    return 6.0 * sum(int(widths[k]) * int(widths[k + 1]) for k in range(len(widths) - 1))


class Slicer:
    """Slice sizes (in batches) for the epochs of one fit.

    The first slice is estimated from ``FIRST_FLOPS``; after each slice the
    size becomes what ``TARGET_SECONDS`` takes at the measured rate (at most
    4 times the last size, at least half of it).  The size carries over from
    one epoch to the next, and from one ``fit`` of a model to the next with
    the same batch size (``MLP._slicer``).
    """

    __slots__ = ("batch_flops", "size")

    def __init__(self, batch_size, widths):
        self.batch_flops = max(1.0, batch_size * flops_per_row(widths))
        self.size = max(1, int(FIRST_FLOPS // self.batch_flops))

    def whole(self, nb):
        """True if an epoch of ``nb`` batches is small enough for one call."""
        return nb * self.batch_flops <= ONE_CALL_FLOPS

    def record(self, batches, seconds):
        if seconds <= 0:
            self.size = min(4 * self.size, 1 << 40)
            return
        want = batches / seconds * TARGET_SECONDS
        self.size = int(max(1, self.size // 2, min(4 * self.size, want)))


class EpochState:
    """Where an epoch stands: batches done and the sums of their losses
    (``loss_sum``, as the kernels add them) and right answers."""

    __slots__ = ("correct", "done", "loss_sum")

    def __init__(self, done=0, loss_sum=0.0, correct=0):
        self.done, self.loss_sum, self.correct = done, loss_sum, correct


def run_epoch(call, n, batch_size, slicer, state, report=None):
    """Run one epoch as compiled calls on consecutive slices of whole batches.

    ``call(a, b, loss_sum)`` runs the compiled epoch on rows ``perm[a:b]``
    (``a`` a multiple of ``batch_size``) continuing the loss sum
    ``loss_sum``, commits the step count, and returns ``(status, batch,
    loss_sum, correct)`` as the kernel does (loss_sum: the running sum).  ``state``
    (an ``EpochState``) says which batches are done already and is updated
    after each slice; then ``report(rows_done)`` runs, then ``check``.
    ``slicer`` None: one call.  Returns ``(status, batch)``: ``batch`` is
    the failing batch (0-based, in the epoch) when status != 0.

    The kernels continue the running loss sum they are given, so the
    epoch's loss_sum is bit for bit that of one uncut call however the
    epoch is sliced.
    """
    nb = -(-n // batch_size)
    while state.done < nb:
        done = state.done
        k = nb - done if slicer is None or (done == 0 and slicer.whole(nb)) else \
            min(slicer.size, nb - done)
        a = done * batch_size
        b = min(n, (done + k) * batch_size)
        t0 = time.perf_counter()
        status, batch, ls, c = call(a, b, state.loss_sum)
        if slicer is not None:
            slicer.record(k, time.perf_counter() - t0)
        if status != 0:
            return status, done + int(batch)
        state.loss_sum = ls
        state.correct += int(c)
        state.done = done + k
        if report is not None:
            report(b)
        check()
    return 0, nb


_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_every(value, name="checkpoint_every"):
    """``checkpoint_every`` as ``(epochs, seconds)``, one of them None.

    A positive int counts epochs; a string "30s", "10min", "2h" (or "1.5h")
    or a ``datetime.timedelta`` gives a time.
    """
    if type(value) is int and value > 0:  # the common case, and the default
        return value, None
    import datetime

    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]+)\s*",
                         value.lower())
        if m is None or m.group(2) not in _UNITS:
            raise ValueError(f"{name} must be a number of epochs or a time such as "
                             f"'30s', '10min' or '2h'; got {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        from ._validation import as_positive_int

        return as_positive_int(value, name), None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a positive time; got {value!r}")
    return None, seconds


class Progress:
    """One tqdm bar over the rows of a whole fit: rows done, rate, ETA and
    the running loss of the epoch; the epoch's figures (validation
    included) when it ends.  ``first_epoch``: the model's number of the
    epoch shown as 1.  The CLI shares one between its calls of ``fit``."""

    def __init__(self, total_rows, epochs, desc="fit", file=None, initial=0,
                 first_epoch=1):
        from tqdm.auto import tqdm

        self.epochs = epochs
        self.first = first_epoch
        self.epoch = 0
        self.bar = tqdm(total=total_rows, initial=initial, unit="row", unit_scale=True,
                        desc=desc, file=file, mininterval=0.1, smoothing=0.1,
                        dynamic_ncols=True)
        self.last = {}

    def start_epoch(self, epoch):
        """``epoch``: the model's epoch number (``epochs_trained + 1``)."""
        self.epoch = epoch - self.first + 1

    def advance(self, rows, loss=None, accuracy=None):
        post = {"epoch": f"{self.epoch}/{self.epochs}"}
        if loss is not None:
            post["loss"] = f"{loss:.4f}"
        if accuracy is not None:
            post["acc"] = f"{accuracy:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(rows)

    def end_epoch(self, figures):
        post = {"epoch": f"{self.epoch}/{self.epochs}"}
        post.update({k.replace("accuracy", "acc"): f"{v:.4f}" for k, v in figures.items()})
        self.last = post
        self.bar.set_postfix(post)

    def write(self, message):
        self.bar.write(message)

    def close(self):
        self.bar.close()

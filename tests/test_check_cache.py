"""The per-step checks are cached (MLP._check_structure, Optimizer._checked_hp,
Optimizer.bind), so a change made after a first, fully checked call must
still be seen: each change below gets the same error after a call as it
gets before any call, and nothing is written."""

import pickle

import numpy as np
import pytest

import fastbp as fb

WIDTHS = [6, 5, 3]


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, WIDTHS[0])).astype(np.float32), rng.integers(0, 3, n)


def _fresh(adam=False):
    m = fb.MLP(WIDTHS, seed=0)
    o = fb.Adam(lr=1e-3) if adam else fb.SGD(lr=0.1, momentum=0.9)
    return m, o


def _plant_state(m, o):
    """A state as bind would make it, planted without bind (no cache made)."""
    o.state_ = (np.zeros_like(m.flat_params), np.zeros_like(m.flat_params))
    o.step_ = 0


def _set_dtype(a, dt):
    a.dtype = dt  # in place: the same object, another view of its memory


def _set_shape(a, shape):
    a.shape = shape  # in place


# change(model, optimizer): each must be refused on the next step
MODEL_CHANGES = {
    "widths shrunk": lambda m, o: setattr(m, "widths", np.array([6, 4, 3])),
    "widths grown": lambda m, o: setattr(m, "widths", np.array([6, 50, 3])),
    "widths as a list": lambda m, o: setattr(m, "widths", [6, 5, 3]),
    "widths dtype in place": lambda m, o: _set_dtype(m.widths, np.float64),
    "widths shape in place": lambda m, o: _set_shape(m.widths, (3, 1)),
    "codes replaced": lambda m, o: setattr(m, "codes", np.array([0, 99])),
    "codes int32": lambda m, o: setattr(m, "codes", m.codes.astype(np.int32)),
    "output unknown": lambda m, o: setattr(m, "output", "bogus"),
    "dtype reassigned": lambda m, o: setattr(m, "dtype", np.dtype(np.float64)),
    "alpha negative": lambda m, o: setattr(m, "alpha", -1.0),
    "alpha a string": lambda m, o: setattr(m, "alpha", "0.1"),
    "alpha True": lambda m, o: setattr(m, "alpha", True),
    "params float64": lambda m, o: setattr(m, "_params", m._params.astype(np.float64)),
    "params too short": lambda m, o: setattr(m, "_params", m._params[:-1].copy()),
    "params strided": lambda m, o: setattr(m, "_params", np.repeat(m._params, 2)[::2]),
    "params dtype in place": lambda m, o: _set_dtype(m.flat_params, np.int32),
    "params shape in place": lambda m, o: _set_shape(m.flat_params, (1, -1)),
    "grads float64": lambda m, o: setattr(m, "_grads", m._grads.astype(np.float64)),
    "lr a string": lambda m, o: setattr(o, "lr", "0.1"),
    "lr negative": lambda m, o: setattr(o, "lr", -1.0),
    "lr NaN": lambda m, o: setattr(o, "lr", float("nan")),
    "lr rounds to 0 in float32": lambda m, o: setattr(o, "lr", 1e-50),
    "momentum True": lambda m, o: setattr(o, "momentum", True),
    "momentum above 1": lambda m, o: setattr(o, "momentum", 1.5),
    "nesterov a string": lambda m, o: setattr(o, "nesterov", "yes"),
    "step_ negative": lambda m, o: setattr(o, "step_", -1),
    "step_ a float": lambda m, o: setattr(o, "step_", 2.0),
    "step_ a bool": lambda m, o: setattr(o, "step_", True),
    "state read-only in place": lambda m, o: setattr(o.state_[1].flags, "writeable", False),
    "state aliasing params": lambda m, o: setattr(o, "state_", (o.state_[0], m.flat_params)),
    "state strided": lambda m, o: setattr(
        o, "state_", (np.zeros(2 * m.n_params, np.float32)[::2], o.state_[1])),
}


def _error(fn, *args, **kwargs):
    """(type, message) of the TypeError or ValueError that fn(*args) raises."""
    with pytest.raises((TypeError, ValueError)) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("again", ["optimizer given", "no arguments (fast path)"])
@pytest.mark.parametrize("name", MODEL_CHANGES)
def test_change_after_a_call_gets_the_first_call_error(name, again):
    X, y = _data()
    change = MODEL_CHANGES[name]
    m0, o0 = _fresh()
    _plant_state(m0, o0)
    change(m0, o0)
    first = _error(lambda: m0.train_on_batch(X, y, optimizer=o0))

    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    m.train_on_batch(X, y)  # the cached path
    change(m, o)
    memory = [a.tobytes() for a in (m._params, m._grads, *o.state_)]
    kwargs = {"optimizer": o} if again == "optimizer given" else {}
    assert _error(lambda: m.train_on_batch(X, y, **kwargs)) == first
    # no kernel ran: nothing written
    assert [a.tobytes() for a in (m._params, m._grads, *o.state_)] == memory


@pytest.mark.parametrize("adam", [False, True])
def test_read_only_params_after_a_call_trains_a_copy_as_on_a_first_call(adam):
    """A parameter buffer made read-only (in place, or replaced by a read-only
    one) after a call is not written: training continues on a copy, as it
    does when the buffer is read-only from the start."""
    X, y = _data()
    for replace in (False, True):
        m, o = _fresh(adam)
        ref, o_ref = _fresh(adam)
        for model, opt in ((m, o), (ref, o_ref)):
            model.train_on_batch(X, y, optimizer=opt)
        if replace:
            ro = m._params.copy()
            ro.flags.writeable = False
            m._params = ro
        else:
            ro = m._params
            ro.flags.writeable = False
        frozen = ro.copy()
        m.train_on_batch(X, y)
        ref.train_on_batch(X, y)
        np.testing.assert_array_equal(ro, frozen)  # never written
        assert m.flat_params is not ro and m.flat_params.flags.writeable
        np.testing.assert_array_equal(m.flat_params, ref.flat_params)


def test_state_read_only_before_and_after_a_call_same_error():
    m0, o0 = _fresh()
    _plant_state(m0, o0)
    o0.state_[0].flags.writeable = False
    X, y = _data()
    first = _error(lambda: m0.train_on_batch(X, y, optimizer=o0))
    assert "state_[0] must be a contiguous, writeable array" in first[1]
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    o.state_[0].flags.writeable = False
    assert _error(lambda: m.train_on_batch(X, y)) == first


@pytest.mark.parametrize("adam", [False, True])
def test_state_values_changed_after_a_call_are_caught_by_the_update_check(adam):
    """State values are not part of the cached check: a non-finite one is
    refused by the kernel's update check (DivergenceError, nothing written),
    after a call as on a first call."""
    X, y = _data()
    for after_a_call in (False, True):
        m, o = _fresh(adam)
        if after_a_call:
            m.train_on_batch(X, y, optimizer=o)
        else:
            _plant_state(m, o)
        o.state_[0][3] = np.nan
        params = m.flat_params.copy()
        with pytest.raises(fb.DivergenceError, match="non-finite update"):
            m.train_on_batch(X, y, optimizer=o)
        np.testing.assert_array_equal(m.flat_params, params)


def test_state_reshaped_in_place_is_replaced_as_on_a_first_call():
    """A state of another shape is replaced by a fresh one (bind's rule) also
    when the same arrays are reshaped after a call."""
    X, y = _data()
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    old = o.state_
    old[0].shape = (1, -1)
    m.train_on_batch(X, y)
    assert o.state_ is not old and o.state_[0].shape == m.flat_params.shape
    assert o.step_ == 1


def test_widths_and_codes_cannot_be_made_writeable():
    """The checked widths and codes are read-only for good: an array owning
    its memory could be made writeable again and edited behind the cache."""
    m, _ = _fresh()
    X, y = _data()
    m.train_on_batch(X, y, optimizer=fb.SGD(lr=0.1))
    for a in (m.widths, m.codes):
        with pytest.raises(ValueError, match="WRITEABLE"):
            a.flags.writeable = True
    # a user's own (writeable, or read-only but owning) array is replaced by
    # a frozen copy when checked: editing the original changes nothing
    own = np.array(WIDTHS)
    own.flags.writeable = False
    m.widths = own
    m.train_on_batch(X, y)
    assert m.widths is not own
    own.flags.writeable = True
    own[1] = 500
    m.train_on_batch(X, y)
    np.testing.assert_array_equal(m.widths, WIDTHS)


def test_new_objects_are_checked_whatever_their_id():
    """The cache keeps the checked objects, not their ids: a new array that
    happens to get a freed array's id is still checked."""
    X, y = _data()
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    for _ in range(200):
        m.widths = np.array([6, 500, 3])
        with pytest.raises(ValueError, match="no longer agree"):
            m.train_on_batch(X, y)
    m.widths = np.array(WIDTHS)
    m.train_on_batch(X, y)


def test_setting_reassigned_to_an_equal_value_of_another_type_is_checked():
    """Identity, not equality, decides: ``momentum = True`` after a checked
    ``momentum = 1.0`` is refused, and ``lr = np.float32(...)`` is accepted
    and normalised to a float as the constructor does."""
    X, y = _data()
    m = fb.MLP(WIDTHS, seed=0)
    o = fb.SGD(lr=0.1, momentum=1.0)
    m.train_on_batch(X, y, optimizer=o)
    o.momentum = True
    with pytest.raises(TypeError, match="momentum must be a real number"):
        m.train_on_batch(X, y)
    o.momentum = 0.5
    o.lr = np.float32(0.25)
    m.train_on_batch(X, y)
    assert type(o.lr) is float and o.lr == float(np.float32(0.25))


@pytest.mark.parametrize("adam", [False, True])
def test_optimizer_step_sees_changes_after_a_call(adam):
    """Optimizer.step: the same errors before and after a first step."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal(50).astype(np.float32)

    def ready():
        o = fb.Adam(lr=1e-3) if adam else fb.SGD(lr=0.1, momentum=0.9)
        return o, rng.standard_normal(50).astype(np.float32)

    changes = {
        "lr a string": lambda o, p: setattr(o, "lr", "0.1"),
        "lr rounds to 0": lambda o, p: setattr(o, "lr", 1e-50),
        "step_ negative": lambda o, p: setattr(o, "step_", -3),
        "state read-only": lambda o, p: setattr(o.state_[0].flags, "writeable", False),
        "state aliasing params": lambda o, p: setattr(o, "state_", (p, o.state_[1])),
        "params read-only": lambda o, p: setattr(p.flags, "writeable", False),
    }
    for name, change in changes.items():
        o0, p0 = ready()
        o0.state_ = (np.zeros_like(p0), np.zeros_like(p0))
        change(o0, p0)
        first = _error(o0.step, p0, g)
        o, p = ready()
        o.step(p, g)
        o.step(p, g)  # the cached path
        before = p.copy()
        change(o, p)
        assert _error(o.step, p, g) == first, name
        np.testing.assert_array_equal(p, before)


def test_caches_are_not_pickled():
    X, y = _data()
    m, o = _fresh(adam=True)
    m.train_on_batch(X, y, optimizer=o)
    o2 = pickle.loads(pickle.dumps(o))
    assert "_checked" not in o2.__dict__ and "_bound" not in o2.__dict__
    m2 = pickle.loads(pickle.dumps(m))
    assert "_checked" not in m2.__dict__
    m.train_on_batch(X, y)
    m2.train_on_batch(X, y)
    np.testing.assert_array_equal(m2.flat_params, m.flat_params)
    with pytest.raises(ValueError, match="WRITEABLE"):
        m2.widths.flags.writeable = True  # frozen again by its first check


def test_optimizer_does_not_keep_a_dropped_model_buffer_alive():
    import gc
    import weakref

    X, y = _data()
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    buffer = weakref.ref(m.flat_params)
    del m
    gc.collect()
    assert buffer() is None
    m2 = fb.MLP(WIDTHS, seed=1)  # another buffer, perhaps at the freed one's address
    p = m2.flat_params.copy()
    o.state_[0][:] = 0
    o.state_ = (o.state_[0], p)  # aliasing the new buffer: the full check sees it
    with pytest.raises(ValueError, match="share memory with the parameters"):
        o.step(p, np.zeros_like(p))


BAD_BATCHES = {
    "NaN in X": lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X)
                              .astype(X.dtype), y),
    "inf in the last row of X": lambda X, y: (np.vstack([X[:-1], np.full_like(X[-1:], np.inf)]),
                                               y),
    "label too large": lambda X, y: (X, np.where(np.arange(y.size) == 3, WIDTHS[-1], y)),
    "label negative": lambda X, y: (X, np.where(np.arange(y.size) == 0, -1, y)),
    "label huge": lambda X, y: (X, np.full_like(y, 2 ** 62)),
}


@pytest.mark.parametrize("name", BAD_BATCHES)
def test_bad_values_on_the_fast_path_get_the_first_call_error(name):
    """train_on_batch's fast path (a call after a checked one) leaves the
    value checks of X and int labels to the epoch kernel; a bad value gets
    the checked path's error, and nothing is written or counted."""
    check_bad_batch_on_the_fast_path(name)


def check_bad_batch_on_the_fast_path(name, n=8):
    """The bad batch ``BAD_BATCHES[name]`` of n rows, given to the fast path
    of train_on_batch, gets the first (checked) call's error, and leaves
    the parameters, state and step count as they were; the next good call
    steps on."""
    X, y = _data(n)
    Xb, yb = BAD_BATCHES[name](X, y)
    assert Xb.dtype == np.float32 and Xb.flags.c_contiguous and yb.dtype == np.int64
    m0, o0 = _fresh()
    first = _error(lambda: m0.train_on_batch(Xb, yb, optimizer=o0))
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    m.train_on_batch(X, y)
    assert m._tob is not None  # the next call takes the fast path
    memory = [a.tobytes() for a in (m._params, *o.state_)]
    step = o.step_
    assert _error(lambda: m.train_on_batch(Xb, yb)) == first
    assert [a.tobytes() for a in (m._params, *o.state_)] == memory
    assert o.step_ == step
    m.train_on_batch(X, y)  # and it goes on
    assert o.step_ == step + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("adam", [False, True])
def test_fast_path_is_bit_identical_to_the_checked_path(adam, dtype):
    """Calls without arguments after a first one take the fast path; calls
    that pass the optimizer take the checked one.  Both give the same
    parameters, state and losses bit for bit, over batches of several sizes
    (smaller than the workspace's, then larger: a new workspace)."""
    rng = np.random.default_rng(1)
    sizes = [8, 8, 5, 1, 8, 12, 12, 3]
    batches = [(rng.standard_normal((n, WIDTHS[0])).astype(dtype), rng.integers(0, 3, n))
               for n in sizes]
    fast, o_fast = fb.MLP(WIDTHS, seed=0, dtype=dtype), fb.Adam(lr=1e-2) if adam \
        else fb.SGD(lr=0.1, momentum=0.9)
    slow, o_slow = fb.MLP(WIDTHS, seed=0, dtype=dtype), fb.Adam(lr=1e-2) if adam \
        else fb.SGD(lr=0.1, momentum=0.9)
    fast.optimizer = o_fast
    taken = []
    for X, y in batches:
        taken.append(fast.__dict__.get("_tob") is not None and X.shape[0] <= fast._tob.cap)
        a = fast.train_on_batch(X, y)
        b = slow.train_on_batch(X, y, optimizer=o_slow)
        assert a == b
    assert sum(taken) >= 5  # most calls did take the fast path
    # and the last ones called the compiled epoch without its dispatcher
    assert fast._tob.entry is not None
    np.testing.assert_array_equal(fast.flat_params, slow.flat_params)
    for s, t in zip(o_fast.state_, o_slow.state_):
        np.testing.assert_array_equal(s, t)
    assert o_fast.step_ == o_slow.step_ == len(sizes)


def test_fast_path_sees_a_new_learning_rate_and_a_reset():
    X, y = _data()
    m, o = _fresh()
    ref, o_ref = _fresh()
    for model, opt in ((m, o), (ref, o_ref)):
        model.train_on_batch(X, y, optimizer=opt)
        model.train_on_batch(X, y)
        opt.lr = 0.01
        model.train_on_batch(X, y) if model is m else model.train_on_batch(X, y, optimizer=opt)
        opt.reset()
        model.train_on_batch(X, y) if model is m else model.train_on_batch(X, y, optimizer=opt)
    np.testing.assert_array_equal(m.flat_params, ref.flat_params)
    assert o.step_ == o_ref.step_ == 1


def test_a_copy_does_not_write_the_original():
    """The fast path's record holds the model's buffers: a copy (pickle,
    copy.deepcopy) must not carry it.  (copy.copy shares the buffers
    themselves, as for any object holding arrays.)"""
    import copy

    X, y = _data()
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    m.train_on_batch(X, y)
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        before = m.flat_params.copy()
        clone.train_on_batch(X, y)
        np.testing.assert_array_equal(m.flat_params, before)
        assert not np.array_equal(clone.flat_params, before)


def _set_state_shape(o):
    o.state_[1].shape = (1, -1)


ALSO_WRONG = {
    "y one label short": lambda m, o, y: (y[:-1], None),
    "lr negative": lambda m, o, y: (y, setattr(o, "lr", -1.0)),
    "step_ negative": lambda m, o, y: (y, setattr(o, "step_", -1)),
    "state reshaped in place": lambda m, o, y: (y, _set_state_shape(o)),
    "state reset": lambda m, o, y: (y, o.reset()),
    "nothing else": lambda m, o, y: (y, None),
}


@pytest.mark.parametrize("name", ALSO_WRONG)
def test_bad_X_with_another_change_gets_the_checked_paths_error_and_effects(name):
    """A bad X together with another change: the fast path reports what the
    checked path reports (X first) and leaves the optimizer as it does (no
    state replaced or step count reset by a call that raises)."""
    X, y = _data()
    Xn = X.copy()
    Xn[-1, -1] = np.nan
    outcomes = []
    for via in ("optimizer given", "fast path"):
        m, o = _fresh()
        m.train_on_batch(X, y, optimizer=o)
        m.train_on_batch(X, y)
        y2, _ = ALSO_WRONG[name](m, o, y)
        kwargs = {"optimizer": o} if via == "optimizer given" else {}
        err = _error(lambda: m.train_on_batch(Xn, y2, **kwargs))  # noqa: B023
        state = None if o.state_ is None else [a.copy() for a in o.state_]
        outcomes.append((err, o.step_, state))
    (e1, s1, st1), (e2, s2, st2) = outcomes
    assert e1 == e2 and "X" in e1[1]
    assert s1 == s2
    assert (st1 is None) == (st2 is None)
    if st1 is not None:
        for a, b in zip(st1, st2):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def test_fast_path_record_does_not_keep_a_replaced_optimizer_or_workspace_alive():
    import gc
    import weakref

    X, y = _data()
    m, o = _fresh()
    m.train_on_batch(X, y, optimizer=o)
    m.train_on_batch(X, y)
    old_opt, old_ws = weakref.ref(o), weakref.ref(m._ws["acts"])
    del o
    m.fit(X, y, epochs=1, batch_size=3, optimizer=fb.Adam(lr=1e-3))  # another optimizer and workspace
    gc.collect()
    assert old_opt() is None and old_ws() is None

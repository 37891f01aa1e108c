"""Leaf kernels called through a table of function pointers, linked on first use.

Why: Numba compiles a kernel that calls another compiled function by copying
the callee's LLVM IR into the caller and optimising the whole module again,
so every loop kernel used by ``train_epoch`` was optimised twice (once on its
own, once inside the epoch), and every loss and optimizer was compiled on the
first ``fit`` whether it was used or not.  Here each leaf kernel is compiled
(or loaded from the on-disk cache) once, on its own, only when it is first
called; callers hold a declaration and an indirect call instead of its body.

How: ``_TABLE`` has one slot per (leaf, dtype).  Its address is registered
with LLVM under a fixed symbol name, as ``blas.py`` registers OpenBLAS, so a
cached caller finds it again in a new process.  A call through
``linked(leaf)`` loads the slot; when it is still empty (the first call in
this process) it calls ``_resolve``, a ctypes callback that takes the GIL,
compiles or loads the leaf for that dtype's signature, stores the address of
its native function in the slot and returns it.  The call itself uses
Numba's calling convention for the leaf's signature, which is fixed here per
dtype (``_SPECS``) and checked against what Numba compiled, so a caller can
never call a leaf with arguments of another layout.

The leaf runs its standalone machine code from every caller and from
Python, so its results do not depend on the context it was compiled in.
"""

import ctypes
import importlib
import inspect
import traceback

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils, errors
from numba.core.typing import signature
from numba.extending import intrinsic

_I64 = types.int64
_F64 = types.float64
_B = types.boolean
_NONE = types.none
DTYPES = (types.float32, types.float64)


def _c(t, ndim):
    return types.Array(t, ndim, "C")


def _loss_args(t):
    return (_c(t, 2), _c(t, 2), _c(t, 1), _c(t, 2))


def _sgd_args(t):
    return (_c(t, 1), _c(t, 1), _c(t, 1), _F64, _F64, _F64, _F64, _B, _B)


def _adam_args(t):
    return (_c(t, 1),) * 4 + (_I64, _F64, _F64, _F64, _F64, _F64)


def _sgd_fused_args(t):
    return (_c(t, 1),) * 5 + (_F64, _F64, _F64, _F64, _B, _B)


def _adam_fused_args(t):
    return (_c(t, 1),) * 7 + (_I64, _F64, _F64, _F64, _F64, _F64)


def _ro(t, ndim):
    return types.Array(t, ndim, "C", readonly=True)


def _network_record(t):
    # as MLP passes it: widths and codes are read-only arrays (records.py)
    return types.Tuple((_c(t, 1), _c(t, 1), _ro(_I64, 1), _ro(_I64, 1), _F64))


def _batch_record(t):
    return types.Tuple((_c(t, 2), _c(_I64, 1), _c(t, 2), _c(_F64, 1), _I64))


def _optimizer_record(t):
    return types.Tuple((_I64, _c(_F64, 1), _c(t, 1), _c(t, 1), _I64))


def _workspace_record(t):
    return types.Tuple((_c(t, 1), _c(_I64, 1), _c(t, 1), _c(_F64, 1)) + (_c(t, 1),) * 8)


def _train_step_args(t):
    # the records of records.py, as fit and MLP.train_on_batch pass them, so
    # that both share one compiled step
    return (_network_record(t), _batch_record(t), _optimizer_record(t), _workspace_record(t),
            _I64)


def _forward_block_args(t):
    return (_c(t, 1), _I64, _I64, _I64, _I64, _c(t, 2), _c(t, 2), _I64, _I64)


def _layer_record(t):
    # params, grads, offset, d_in, d_out, h_in, da, dh, code, alpha
    # (network.backward_block)
    return types.Tuple((_c(t, 1), _c(t, 1), _I64, _I64, _I64, _c(t, 2), _c(t, 2), _c(t, 2),
                        _I64, _F64))


def _next_buffers(t):
    # p_next, s1_next, s2_next
    return types.UniTuple(_c(t, 1), 3)


def _backward_block_args(t):
    return (_I64, _I64, _layer_record(t), _optimizer_record(t), _next_buffers(t), _c(t, 1))


def _layer_par_args(t):
    return (_I64, _layer_record(t), _optimizer_record(t), _next_buffers(t), _I64, _c(t, 1),
            _c(_I64, 1))


def _update_block_args(t):
    return (_I64, _I64, _c(t, 1), _c(t, 1), _optimizer_record(t), _next_buffers(t))


def _gather_source(t):
    # X, perm, start, check (network.batch_pass)
    return types.Tuple((_c(t, 2), _c(_I64, 1), _I64, _B))


def _batch_block_args(t):
    # network.batch_pass and batch_update: thread, threads, the step's
    # records as train_step takes them, the gather's source
    return (_I64, _I64, *_train_step_args(t)[:4], _gather_source(t))


def _batch_par_args(t):
    return (_I64, *_train_step_args(t)[:4], _gather_source(t), _I64)


def _first_layer_args(t):
    # sparse.first_layer_par's; first_layer_rows takes the thread index first
    return (_I64, _c(t, 1), _c(t, 1), _I64, _F64, _c(t, 2), _c(t, 1), _c(_I64, 1),
            _c(_I64, 1), _c(_I64, 1), _c(t, 2), _optimizer_record(t), _next_buffers(t),
            _c(t, 1))


def _loss_and_correct(t):
    return types.Tuple((t, _I64))


#: leaf kernel ("module.function" in this package) -> (argument types,
#: return type), each a function of the float dtype.  Named, not imported,
#: so that the modules defining leaves can themselves call linked leaves.
_SPECS = {
    "losses.row_weights": (lambda t: (_I64, _c(_F64, 1), _c(t, 1)), lambda t: _NONE),
    "activations.bias_activation_cols": (lambda t: (_c(t, 2), _c(t, 1), _I64, _I64, _I64),
                                         lambda t: _NONE),
    "activations.bias_smooth": (lambda t: (_c(t, 2), _c(t, 1), _I64, _I64, _I64),
                                lambda t: _NONE),
    "activations.delta_cols": (lambda t: (_c(t, 2), _c(t, 2), _I64, _c(t, 1), _I64, _I64),
                               lambda t: _NONE),
    "losses.softmax_xent_labels": (lambda t: (_c(t, 2), _c(_I64, 1), _c(t, 1), _c(t, 2)),
                                   _loss_and_correct),
    "losses.softmax_xent_targets": (_loss_args, _loss_and_correct),
    "losses.sigmoid_xent": (_loss_args, _loss_and_correct),
    "losses.half_squared_error": (_loss_args, lambda t: t),
    "losses.poisson_log_link": (_loss_args, lambda t: t),
    "optim.sgd_check": (_sgd_args, lambda t: _I64),
    "optim.sgd_update": (_sgd_args, lambda t: _NONE),
    "optim.adam_check": (_adam_args, lambda t: _I64),
    "optim.adam_update": (_adam_args, lambda t: _NONE),
    "optim.sgd_fused": (_sgd_fused_args, lambda t: _I64),
    "optim.adam_fused": (_adam_fused_args, lambda t: _I64),
    "optim.sgd_in_place": (_sgd_args, lambda t: _I64),
    "optim.adam_in_place": (_adam_args, lambda t: _I64),
    "optim.sgd_journal": (_sgd_fused_args, lambda t: _I64),
    "optim.adam_journal": (_adam_fused_args, lambda t: _I64),
    "network.update_block": (_update_block_args, lambda t: _I64),
    "network.forward_block": (_forward_block_args, lambda t: _NONE),
    "network.forward_split": (lambda t: (_I64, _I64, _I64, _layer_record(t)),
                              lambda t: _NONE),
    "network.backward_block": (_backward_block_args, lambda t: _NONE),
    "network.layer_par": (_layer_par_args, lambda t: _NONE),
    "network.check_batch": (lambda t: (_c(t, 1), _c(_I64, 1), _I64), lambda t: _I64),
    "network.gather_block": (lambda t: (_c(t, 2), _c(_I64, 1), _I64, _I64, _I64, _c(t, 2)),
                             lambda t: _NONE),
    "network.batch_pass": (_batch_block_args, lambda t: _NONE),
    "network.batch_update": (_batch_block_args, lambda t: _NONE),
    "network.batch_par": (_batch_par_args, lambda t: _NONE),
    "network.batch_split_step": (lambda t: (*_train_step_args(t)[:4], _gather_source(t), _I64),
                                 lambda t: types.Tuple((_I64, t, _I64, _I64))),
    "network.train_step": (_train_step_args, lambda t: types.Tuple((_I64, t, _I64, _I64))),
    "sparse.first_layer_rows": (lambda t: (_I64, *_first_layer_args(t)), lambda t: _NONE),
    "sparse.first_layer_par": (_first_layer_args, lambda t: _NONE),
}
_LEAVES = list(_SPECS)
#: slot k * len(DTYPES) + j holds leaf k for DTYPES[j]
_TABLE = (ctypes.c_void_p * (len(_LEAVES) * len(DTYPES)))()
_TABLE_SYMBOL = "fastbp_leaf_table"
_RESOLVE_SYMBOL = "fastbp_leaf_resolve"


def signature_of(leaf, dtype):
    """(argument types, return type) of ``leaf`` for the float type ``dtype``."""
    args, ret = _SPECS[leaf]
    return args(dtype), ret(dtype)


def dispatcher(leaf):
    """The Numba dispatcher of ``leaf`` ("module.function")."""
    module, func = leaf.split(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


def _address(slot):
    """Compile or load the leaf of ``slot`` and return its native address."""
    name = _LEAVES[slot // len(DTYPES)]
    argtypes, ret = signature_of(name, DTYPES[slot % len(DTYPES)])
    leaf = dispatcher(name)
    leaf.compile(argtypes)
    cres = leaf.overloads[argtypes]
    if cres.signature.return_type != ret:  # a _SPECS entry out of date: refuse to call
        raise TypeError(f"{name} returns {cres.signature.return_type}, "
                        f"linking.py declares {ret}")
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


def resolve(slot):
    """Fill ``_TABLE[slot]`` if empty and return its address."""
    if not _TABLE[slot]:
        _TABLE[slot] = _address(slot)
    return _TABLE[slot]


@ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int64)
def _resolve(slot):
    """``resolve`` for compiled code (ctypes takes the GIL for the call).
    An exception cannot cross into compiled code: it is printed and 0
    returned, and the caller raises RuntimeError naming the kernel."""
    try:
        return resolve(slot)
    except BaseException:  # noqa: BLE001 (reported here, raised by the caller)
        traceback.print_exc()
        return 0


def compile_all(dtype):
    """Compile (or load from the cache) every leaf for the float type
    ``dtype`` (a Numba type in DTYPES) and fill its slots, so that no later
    call compiles one (``fastbp.prepare``).  The sparse module's leaves are
    left to their first use, as the rest of that module is: about 3 s of
    CPU that a user of dense X never needs."""
    j = DTYPES.index(dtype)
    for k, leaf in enumerate(_LEAVES):
        if not leaf.startswith("sparse."):
            resolve(k * len(DTYPES) + j)


def slot_filled(leaf, dtype):
    """Whether ``leaf`` is linked for ``dtype`` in this process."""
    return bool(_TABLE[_LEAVES.index(leaf) * len(DTYPES) + DTYPES.index(dtype)])


ll.add_symbol(_TABLE_SYMBOL, ctypes.addressof(_TABLE))
ll.add_symbol(_RESOLVE_SYMBOL, ctypes.cast(_resolve, ctypes.c_void_p).value)


def _declare(module, name, ty):
    gv = module.globals.get(name)
    if gv is None:
        gv = ir.GlobalVariable(module, ty, name)
        gv.linkage = "external"
    return gv


def linked(leaf):
    """A compiled-code callable that calls ``leaf`` ("module.function")
    through the table.

    Call it like the leaf; the arguments must have the types ``_SPECS``
    gives for the dtype of the first float array (read-only arrays and
    literal integers are accepted for the same types).
    """
    index = _LEAVES.index(leaf)
    name = leaf.split(".")[1]

    def typer(typingctx, args):
        for j, dtype in enumerate(DTYPES):
            argtypes, ret = signature_of(leaf, dtype)
            if len(args) == len(argtypes) and all(
                    _same(a, b) for a, b in zip(args, argtypes, strict=True)):
                break
        else:
            raise errors.TypingError(f"linked {name}: no signature for {args}")
        slot = index * len(DTYPES) + j

        def codegen(context, builder, sig, llargs):
            mod = builder.module
            voidptr = ir.IntType(8).as_pointer()
            table = _declare(mod, _TABLE_SYMBOL, ir.ArrayType(voidptr, len(_TABLE)))
            resolve = cgutils.get_or_insert_function(
                mod, ir.FunctionType(voidptr, [ir.IntType(64)]), _RESOLVE_SYMBOL)
            where = builder.gep(table, [ir.Constant(ir.IntType(32), 0),
                                        ir.Constant(ir.IntType(32), slot)])
            first = builder.load(where)
            ptr = cgutils.alloca_once_value(builder, first)
            with builder.if_then(cgutils.is_null(builder, first), likely=False):
                got = builder.call(resolve, [ir.Constant(ir.IntType(64), slot)])
                with builder.if_then(cgutils.is_null(builder, got), likely=False):
                    context.call_conv.return_user_exc(
                        builder, RuntimeError,
                        (f"fastbp: compiling the kernel {name} failed (see the error above)",))
                builder.store(got, ptr)
            fnty = context.call_conv.get_function_type(ret, argtypes)
            fn = builder.bitcast(builder.load(ptr), fnty.as_pointer())
            status, res = context.call_conv.call_function(builder, fn, ret, argtypes, llargs)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return res

        return signature(ret, *args), codegen

    def call(typingctx, *args):
        return typer(typingctx, args)

    # Numba folds a call's arguments with the typer's Python signature; one
    # with *args would receive a single tuple, so the leaf's arity is declared.
    arity = len(signature_of(leaf, DTYPES[0])[0])
    pos = inspect.Parameter.POSITIONAL_OR_KEYWORD
    call.__signature__ = inspect.Signature(
        [inspect.Parameter(n, pos) for n in ["typingctx", *(f"a{i}" for i in range(arity))]])
    call.__name__ = call.__qualname__ = name
    return intrinsic(call)


def _same(actual, wanted):
    """actual can be passed where wanted is declared: equal up to
    read-only-ness (the same data model) and integer literals."""
    actual = types.unliteral(actual)
    if isinstance(actual, types.Array) and isinstance(wanted, types.Array):
        return actual.copy(readonly=False) == wanted.copy(readonly=False)
    if isinstance(actual, types.BaseTuple) and isinstance(wanted, types.BaseTuple):
        # a record (records.py): field by field (a tuple's data model is
        # that of its fields)
        return len(actual) == len(wanted) and all(
            _same(a, w) for a, w in zip(actual, wanted, strict=True))
    return actual == wanted

"""add_product(c, a, b, alpha, beta):  c <- beta * c + alpha * (a @ b), in place.

Why: numpy's matmul always writes its product into a fresh (or overwritten) array; it cannot add
it into an existing one. SGD on the paper's first layer then writes a 753 MB gradient x.T @ g in
one pass over memory and reads it back in a second to update W (~190 ms on 2 cores). BLAS's
gemm does both at once, C = beta C + alpha A B, in a single pass over W (~80 ms).

numpy's own wheels carry OpenBLAS with its CBLAS functions exported under the names
scipy_cblas_sgemm64_ / scipy_cblas_dgemm64_ (64-bit integers); we call that same library through
ctypes, so no second BLAS and no second thread pool enter the process. Where it is not found
(another BLAS, numpy built from source) or the arrays' layout does not suit gemm, the same update
runs in numpy over row blocks of about 1 MB: slower, but still no full-size temporary.
"""

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112   # CBLAS enum values, from cblas.h
_BLOCK_BYTES = 1 << 20
_UNSET = object()
_gemm = _UNSET   # {np.float32: sgemm, np.float64: dgemm}, or None when not found; looked up once


def add_product(c, a, b, alpha=1.0, beta=1.0):
    """c <- beta * c + alpha * (a @ b) in place.   c: (M, N), a: (M, K), b: (K, N), one dtype.

    a and b may be transposed views (x.T); c must be a writable C-ordered array.
    """
    m, n = c.shape
    if a.shape[0] != m or b.shape[1] != n or a.shape[1] != b.shape[0]:
        raise ValueError(f"add_product: shapes {c.shape} += {a.shape} @ {b.shape} do not match")
    if not (c.dtype == a.dtype == b.dtype):
        raise TypeError(f"add_product: dtypes differ: c {c.dtype}, a {a.dtype}, b {b.dtype}")
    if not c.flags.writeable:
        raise ValueError("add_product: c is read-only")
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        a, b = a.copy(), b.copy()   # both paths write c while they still read a and b
    gemm = (_blas_gemm() or {}).get(c.dtype.type)
    layouts = [_layout(x) for x in (c, a, b)]
    if gemm is None or None in layouts or layouts[0][0] != _NO_TRANS or c.size == 0 or a.size == 0:
        _numpy_add_product(c, a, b, alpha, beta)
        return
    (_, ldc), (trans_a, lda), (trans_b, ldb) = layouts
    gemm(_ROW_MAJOR, trans_a, trans_b, m, n, a.shape[1], alpha, a.ctypes.data, lda,
         b.ctypes.data, ldb, beta, c.ctypes.data, ldc)


def _layout(x):
    """(CBLAS transpose flag, leading dimension) of a 2-D array as row-major gemm sees it, or None.

    Row-major gemm needs unit stride along one axis: along the rows' elements (NoTrans, the
    leading dimension is the row stride) or down the columns, as in x.T of a C array (Trans).
    """
    size = x.itemsize
    s0, s1 = x.strides
    if s0 % size or s1 % size or x.ctypes.data % size:
        return None
    rows, cols = x.shape
    if s1 == size and s0 >= max(cols, 1) * size:
        return _NO_TRANS, max(s0 // size, 1)
    if s0 == size and s1 >= max(rows, 1) * size:
        return _TRANS, max(s1 // size, 1)
    return None


def _numpy_add_product(c, a, b, alpha, beta):
    """The same update without BLAS: row blocks of c, so no temporary bigger than ~1 MB."""
    rows = max(1, _BLOCK_BYTES // max(c.itemsize * c.shape[1], 1))
    for lo in range(0, c.shape[0], rows):
        block = a[lo:lo + rows] @ b
        block *= alpha
        if beta != 1:
            c[lo:lo + rows] *= beta
        c[lo:lo + rows] += block


def _blas_gemm():
    """{dtype: ctypes gemm} from the OpenBLAS inside numpy's wheel, or None if there is none."""
    global _gemm
    if _gemm is _UNSET:
        _gemm = _find_gemm()
    return _gemm


def _find_gemm():
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):   # an older numpy, or a build that does not say
        return None
    if config.get("name") != "scipy-openblas":
        return None
    numpy_dir = os.path.dirname(np.__file__)
    # Linux and Windows wheels put it in numpy.libs beside the package, macOS in numpy/.dylibs
    candidates = [*glob.glob(os.path.join(numpy_dir + ".libs", "*scipy_openblas64_*")),
                  *glob.glob(os.path.join(numpy_dir, ".dylibs", "*scipy_openblas64_*"))]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            functions = {np.float32: lib.scipy_cblas_sgemm64_, np.float64: lib.scipy_cblas_dgemm64_}
        except (OSError, AttributeError):
            continue
        for dtype, fn in functions.items():
            real = ctypes.c_float if dtype is np.float32 else ctypes.c_double
            i64, ptr, enum = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
            fn.argtypes = [enum, enum, enum, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr,
                           i64]
            fn.restype = None
        return functions
    return None


def using_blas():
    """True when add_product runs through numpy's OpenBLAS (False: the numpy fallback)."""
    return bool(_blas_gemm())

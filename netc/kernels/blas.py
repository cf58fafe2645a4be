"""`gemm`: a direct BLAS matrix product for compiled kernels.

Why not np.dot: inside Numba every np.dot call site compiles its own layout
checks and copies (about 2 s of cold compile each), it cannot accumulate
(C += A·B needs a temporary), and it cannot address a block of columns. This
calls the same SciPy OpenBLAS sgemm/dgemm through Numba's own helper
(`numba_xxgemm`, bound by name, so kernels that use it stay cacheable), and
takes leading dimensions and element offsets the way BLAS does.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, register_jitable
from numba.np.linalg import check_blas_return, ensure_blas

from netc.jit import load_cython_blas
from netc.kernels.gemm_sizes import SMALL_GEMM, SMALL_PERMIT, TN_BLOCKS_DEPTH, TN_BLOCKS_WORK

load_cython_blas()  # Numba's helper binds sgemm/dgemm from it

_CHAR = ir.IntType(8)
_VOIDP = ir.IntType(8).as_pointer()


@intrinsic
def gemm(typingctx, trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """Row-major C[m, n] = op(A) @ op(B) + beta * C, with op(X) = X.T where trans_x.

    a, b, c are C-contiguous arrays of one float dtype; a_off, b_off, c_off index their
    flat storage; lda, ldb, ldc are row strides in elements (so a block of columns of a
    wider matrix is addressed by its first element and the wider row stride)."""
    if not all(isinstance(t, types.Array) and t.layout == "C" for t in (a, b, c)) or not (a.dtype == b.dtype == c.dtype):
        return None  # offsets index contiguous storage
    if a.dtype not in (types.float32, types.float64):
        return None
    ensure_blas()  # SciPy present, and its BLAS integers as wide as Numba's helper assumes
    dtype = a.dtype
    sig = types.void(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)

    def codegen(context, builder, signature, args):
        ta, tb, m_, n_, k_, a_, a_off_, lda_, b_, b_off_, ldb_, beta_, c_, c_off_, ldc_ = args
        argtys = signature.args

        def size(value, ty):
            return context.cast(builder, value, ty, types.intp)

        def pointer(array, ty, offset, offset_ty):
            data = context.make_array(ty)(context, builder, array).data
            return builder.bitcast(builder.gep(data, [size(offset, offset_ty)]), _VOIDP)

        def trans(flag, ty):
            flag = context.cast(builder, flag, ty, types.boolean)
            return builder.select(flag, ir.Constant(_CHAR, ord("t")), ir.Constant(_CHAR, ord("n")))

        alpha = cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0))
        beta_slot = cgutils.alloca_once_value(builder, context.cast(builder, beta_, argtys[11], dtype))
        fnty = ir.FunctionType(ir.IntType(32), [_CHAR, _CHAR, _CHAR, cgutils.intp_t, cgutils.intp_t, cgutils.intp_t,
                                                _VOIDP, _VOIDP, cgutils.intp_t, _VOIDP, cgutils.intp_t, _VOIDP,
                                                _VOIDP, cgutils.intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        kind = ir.Constant(_CHAR, ord("s" if dtype == types.float32 else "d"))
        # column-major BLAS sees each row-major matrix transposed: C.T = op(B).T @ op(A).T
        status = builder.call(fn, (kind, trans(tb, argtys[1]), trans(ta, argtys[0]),
                          size(n_, argtys[3]), size(m_, argtys[2]), size(k_, argtys[4]),
                          builder.bitcast(alpha, _VOIDP),
                          pointer(b_, argtys[8], b_off_, argtys[9]), size(ldb_, argtys[10]),
                          pointer(a_, argtys[5], a_off_, argtys[6]), size(lda_, argtys[7]),
                          builder.bitcast(beta_slot, _VOIDP),
                          pointer(c_, argtys[12], c_off_, argtys[13]), size(ldc_, argtys[14])))
        check_blas_return(context, builder, status)  # sgemm not found: abort, never a silent no-op
        return context.get_dummy_value()

    return sig, codegen


SMALL_ROWS = 32  # rows of a product that gemm_columns splits into blocks of columns (SMALL_GEMM: gemm_sizes)


@register_jitable
def gemm_columns(m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """Row-major C[m, n] = A @ B + beta * C (no transposes); for a product of few rows, in blocks of
    columns each no larger than SMALL_GEMM multiply-adds: the same product, by BLAS's faster kernel."""
    block = (SMALL_GEMM // max(m * k, 1)) // 16 * 16
    if m > SMALL_ROWS or block < 16 or block >= n:
        gemm(False, False, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
        return
    for j in range(0, n, block):
        gemm(False, False, m, min(block, n - j), k, a, a_off, lda, b, b_off + j, ldb, beta, c, c_off + j, ldc)


@register_jitable
def gemm_tn(small_kernels, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """Row-major C[m, n] = A.T @ B + beta * C (a weight gradient: k the batch's rows). Where
    `small_kernels` (OpenBLAS runs its SkylakeX kernels: BufferPlan.blas_small_kernels) and the
    product is a little too large for their unpacked path, it runs as blocks of C that path takes:
    faster, and the same bits (gemm_sizes.TN_BLOCKS_WORK). Each block halves the longer side of the
    one before, until it holds at most SMALL_GEMM multiply-adds. float32 only (what was measured)."""
    work = m * n * k
    if (not small_kernels or c.itemsize != 4 or work <= SMALL_PERMIT or work > TN_BLOCKS_WORK
            or k > TN_BLOCKS_DEPTH):
        gemm(True, False, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
        return
    rows, columns = m, n
    while rows * columns * k > SMALL_GEMM:
        if rows >= columns:
            rows = (rows + 1) // 2
        else:
            columns = (columns + 1) // 2
    for i in range(0, m, rows):  # C's rows are A's columns
        for j in range(0, n, columns):
            gemm(True, False, min(rows, m - i), min(columns, n - j), k, a, a_off + i, lda, b, b_off + j, ldb, beta,
                 c, c_off + i * ldc + j, ldc)

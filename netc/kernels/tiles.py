"""netc's own GEMM micro-kernel, for products whose operands netc packs itself (netc.kernels.conv).

`micro_tile` computes a tile of ROWS x COLUMNS outputs, c = sum over k of a[k, :] (outer) b[k, :],
from two packed panels: a (depth, ROWS) and b (depth, COLUMNS), contiguous. Its accumulators live in
vector registers for the whole loop over k (the LLVM IR is written here, through a Numba intrinsic:
loops over a local array were not kept in registers and ran at 3 GFLOP/s), so it runs at the
machine's multiply-add rate: 205-255 GFLOP/s on one core of the AVX-512 VM, where OpenBLAS's
1024^3 SGEMM reaches ~209-216 (benchmarks/microkernel.py). What OpenBLAS spends around its kernel,
packing both operands again on every call, is left to the caller, which packs each operand once:
a conv's weights once per pass, its input straight from the image into panels (no im2col matrix).

Every output is one chain of fused multiply-adds in k order, started from zero: the same bits for
any tile shape, vector width or CPU (an AVX2 and an AVX-512 build give the same numbers), unlike
OpenBLAS, whose kernels differ by CPU. The tile shape (netc.kernels.gemm_sizes) sets the speed.

A direct convolution (netc.kernels.conv) packs no image at all: `micro_tile_shifted` reads b's rows
in place, each from an offset of its own, and `micro_tile_rows` reads a's rows so, its chain going on
from what c holds (the tiles of one output row of the image after another).

The backward's column gradients go back into the image by `fold_rows` (col2im, stride 1): each row of
the image's gradient held in vector registers while its terms are added in k order, then stored once.
"""

import numpy as np
from llvmlite import ir
from numba import types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from netc.jit import helper
from netc.kernels.gemm_sizes import ROW_TILE_COLUMNS, ROW_TILE_ROWS, TILE_LANES
from netc.kernels.gemm_sizes import TILE_COLUMNS as COLUMNS, TILE_ROWS as ROWS


def _float_arrays(*arrays) -> bool:
    """C-contiguous arrays of one float dtype (float32 or float64), which the tiles read and write."""
    return (all(isinstance(t, types.Array) and t.layout == "C" for t in arrays)
            and all(t.dtype == arrays[0].dtype for t in arrays) and arrays[0].dtype in (types.float32, types.float64))


def _emit_tile(context, builder, dtype, depth, a_scalar, b_vector, c_at, chained, adding, shape=(ROWS, COLUMNS),
               b_per_row=False):
    """The IR of a tile of `shape` (ROWS x COLUMNS unless told): for k < depth, acc[i][j] =
    fma(a(k, i), b(k, j), acc[i][j]) in vector registers, then stored through c_at(i, j) (a pointer into
    row i). The accumulators start from zero, or with `chained` from what c holds (the chain of
    multiply-adds goes on); the stored value is the total, or with `adding` (an i1) c's value plus the
    total. a_scalar(k, i) and b_vector(k, j) give pointers to a's scalar for row i and to b's vector from
    column j at step k; with `b_per_row`, b_vector(k, i, j): each row of the tile reads a b of its own."""
    rows, columns = shape
    lanes = TILE_LANES if dtype == types.float32 else TILE_LANES // 2  # the same register width
    vectors = columns // lanes
    element = context.get_value_type(dtype)
    vec = ir.VectorType(element, lanes)
    i64 = ir.IntType(64)
    suffix = "f32" if dtype == types.float32 else "f64"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{lanes}{suffix}")
    zero = ir.Constant(vec, None)

    def c_vector(i, j):
        return builder.bitcast(c_at(i, j * lanes), vec.as_pointer())

    start = [[builder.load(c_vector(i, j), align=1) if chained else zero for j in range(vectors)] for i in range(rows)]
    entry = builder.block
    loop, done = builder.append_basic_block("tile.loop"), builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", depth, ir.Constant(i64, 0)), loop, done)

    builder.position_at_end(loop)  # one k: a row of b, then a row of a at a time times them
    k = builder.phi(i64)
    acc = [[builder.phi(vec) for _ in range(vectors)] for _ in range(rows)]
    def b_row(*at):
        return [builder.load(builder.bitcast(b_vector(*at, j * lanes), vec.as_pointer()), align=1)
                for j in range(vectors)]

    bs = None if b_per_row else b_row(k)
    summed = []
    for i in range(rows):
        splat = _splat(builder, builder.load(a_scalar(k, i)), lanes)
        row_bs = b_row(k, i) if b_per_row else bs
        summed.append([builder.call(fma, [splat, row_bs[j], acc[i][j]]) for j in range(vectors)])
    k_next = builder.add(k, ir.Constant(i64, 1))
    last = builder.block
    builder.cbranch(builder.icmp_signed("<", k_next, depth), loop, done)
    k.add_incoming(ir.Constant(i64, 0), entry)
    k.add_incoming(k_next, last)
    for i in range(rows):
        for j in range(vectors):
            acc[i][j].add_incoming(start[i][j], entry)
            acc[i][j].add_incoming(summed[i][j], last)

    builder.position_at_end(done)  # the tile stored row by row (its start when depth is 0)
    totals = [[builder.phi(vec) for _ in range(vectors)] for _ in range(rows)]
    for i in range(rows):
        for j in range(vectors):
            total = totals[i][j]
            total.add_incoming(start[i][j], entry)
            total.add_incoming(summed[i][j], last)
    for i in range(rows):
        for j in range(vectors):
            total, where = totals[i][j], c_vector(i, j)
            if adding is None:
                builder.store(total, where, align=1)
            else:
                added = builder.fadd(builder.load(where, align=1), total)
                builder.store(builder.select(adding, added, total), where, align=1)


def _flat(context, builder, ty, array, offset=None, offset_ty=None):
    """A pointer to element `offset` (flat) of a C-contiguous array, or to its first."""
    data = context.make_array(ty)(context, builder, array).data
    if offset is None:
        return data
    return builder.gep(data, [context.cast(builder, offset, offset_ty, types.intp)])


def _i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.intp)


def _splat(builder, value, lanes):
    """A vector of `lanes` copies of value."""
    vec = ir.VectorType(value.type, lanes)
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                                                [0] * lanes))


def _strided(builder, pointer, stride):
    """(index, j) -> pointer + index*stride + j: row `index` of a matrix whose rows are `stride` apart,
    its element j (a constant); index and stride an i64 value or a constant."""
    i64 = ir.IntType(64)

    def value(v):
        return v if isinstance(v, ir.Value) else ir.Constant(i64, v)

    return lambda index, j: builder.gep(pointer, [builder.add(builder.mul(value(index), value(stride)),
                                                              ir.Constant(i64, j))])


def _int64_array(rows) -> bool:
    return isinstance(rows, types.Array) and rows.dtype == types.int64


@intrinsic
def micro_tile(typingctx, a, a_off, b, b_off, c, c_off, ldc, depth, accumulate):
    """c[c_off + i*ldc + j] = sum over k < depth of a[a_off + k*ROWS + i] * b[b_off + k*COLUMNS + j],
    i < ROWS, j < COLUMNS (flat indices into C-contiguous arrays of one float dtype); with `accumulate`,
    that sum is added to what c holds there."""
    if not _float_arrays(a, b, c):
        return None
    sig = types.void(a, a_off, b, b_off, c, c_off, ldc, depth, accumulate)

    def codegen(context, builder, signature, args):
        tys = signature.args
        a_ptr = _flat(context, builder, tys[0], args[0], args[1], tys[1])
        b_ptr = _flat(context, builder, tys[2], args[2], args[3], tys[3])
        c_ptr = _flat(context, builder, tys[4], args[4], args[5], tys[5])
        c_at = _strided(builder, c_ptr, _i64(context, builder, args[6], tys[6]))
        _emit_tile(context, builder, tys[0].dtype, _i64(context, builder, args[7], tys[7]),
                   _strided(builder, a_ptr, ROWS), _strided(builder, b_ptr, COLUMNS), c_at,
                   False, context.cast(builder, args[8], tys[8], types.boolean))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def micro_tile_gathered(typingctx, a, a_off, b, b_off, rows, rows_off, c, c_off, ldc, depth, accumulate):
    """As micro_tile, but each row i of the tile reads b's row of its own at step k: b[b_off +
    rows[rows_off + k*ROWS + i] + j] (rows: int32 flat offsets, packed as a's values are). A sparse a: a
    gradient through a max pool is nonzero at one position of each window, so a weight gradient's tile
    walks each filter's nonzero terms only, in the order the dense chain meets them (the same bits)."""
    if not _float_arrays(a, b, c) or not (isinstance(rows, types.Array) and rows.dtype == types.int32):
        return None
    sig = types.void(a, a_off, b, b_off, rows, rows_off, c, c_off, ldc, depth, accumulate)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64 = ir.IntType(64)
        a_ptr = _flat(context, builder, tys[0], args[0], args[1], tys[1])
        b_ptr = _flat(context, builder, tys[2], args[2], args[3], tys[3])
        rows_ptr = _flat(context, builder, tys[4], args[4], args[5], tys[5])
        c_ptr = _flat(context, builder, tys[6], args[6], args[7], tys[7])
        c_at = _strided(builder, c_ptr, _i64(context, builder, args[8], tys[8]))
        row_at = _strided(builder, rows_ptr, ROWS)

        def b_at(k, i, j):  # row i's b at step k starts rows[k*ROWS + i] on
            start = builder.sext(builder.load(row_at(k, i)), i64)
            return builder.gep(b_ptr, [builder.add(start, ir.Constant(i64, j))])

        _emit_tile(context, builder, tys[0].dtype, _i64(context, builder, args[9], tys[9]),
                   _strided(builder, a_ptr, ROWS), b_at, c_at, False,
                   context.cast(builder, args[10], tys[10], types.boolean), b_per_row=True)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def micro_tile_shifted(typingctx, a, a_off, b, b_off, rows, c, c_off, ldc, depth):
    """As micro_tile (stored, not added), but b's row k is b[b_off + rows[k] : ... + COLUMNS]: rows of an
    image read in place, each shifted by its own offset (a direct convolution's columns, no im2col)."""
    if not _float_arrays(a, b, c) or not _int64_array(rows):
        return None
    sig = types.void(a, a_off, b, b_off, rows, c, c_off, ldc, depth)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64 = ir.IntType(64)
        a_ptr = _flat(context, builder, tys[0], args[0], args[1], tys[1])
        b_ptr = _flat(context, builder, tys[2], args[2], args[3], tys[3])
        rows_ptr = _flat(context, builder, tys[4], args[4])
        c_ptr = _flat(context, builder, tys[5], args[5], args[6], tys[6])
        c_at = _strided(builder, c_ptr, _i64(context, builder, args[7], tys[7]))

        def b_at(k, j):  # row k of b starts rows[k] on
            return builder.gep(b_ptr, [builder.add(builder.load(builder.gep(rows_ptr, [k])), ir.Constant(i64, j))])

        _emit_tile(context, builder, tys[0].dtype, _i64(context, builder, args[8], tys[8]),
                   _strided(builder, a_ptr, ROWS), b_at, c_at, False, None)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def micro_tile_rows(typingctx, a, a_off, rows, r0, b, b_off, c, c_off, ldc, depth):
    """c[c_off + i*ldc + j] += sum over k < depth of a[a_off + rows[r0 + i] + k] * b[b_off + k*RC + j],
    i < ROW_TILE_ROWS, j < RC = ROW_TILE_COLUMNS, continuing the chain of multiply-adds that c holds (c's
    value is where the accumulators start): rows of an image read in place (a direct convolution's weight
    gradient, an output row's positions at a time)."""
    if not _float_arrays(a, b, c) or not _int64_array(rows):
        return None
    sig = types.void(a, a_off, rows, r0, b, b_off, c, c_off, ldc, depth)

    def codegen(context, builder, signature, args):
        tys = signature.args
        i64 = ir.IntType(64)
        a_ptr = _flat(context, builder, tys[0], args[0], args[1], tys[1])
        rows_ptr = _flat(context, builder, tys[2], args[2])
        r0_ = _i64(context, builder, args[3], tys[3])
        b_ptr = _flat(context, builder, tys[4], args[4], args[5], tys[5])
        c_ptr = _flat(context, builder, tys[6], args[6], args[7], tys[7])
        c_at = _strided(builder, c_ptr, _i64(context, builder, args[8], tys[8]))
        starts = [builder.gep(a_ptr, [builder.load(builder.gep(rows_ptr, [builder.add(r0_, ir.Constant(i64, i))]))])
                  for i in range(ROW_TILE_ROWS)]  # row i of a, its cells adjacent
        _emit_tile(context, builder, tys[0].dtype, _i64(context, builder, args[9], tys[9]),
                   lambda k, i: builder.gep(starts[i], [k]), _strided(builder, b_ptr, ROW_TILE_COLUMNS), c_at,
                   True, None, shape=(ROW_TILE_ROWS, ROW_TILE_COLUMNS))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fold_rows(typingctx, dx, dx_off, cols, cols_off, ldc, count, ki0, kj0, KW, H, W, OH, OW, PH, PW):
    """col2im's fold for one channel of one sample, stride 1: for each row ii < H of the plane
    dx[dx_off : dx_off + H*W] and each r < count in turn, (ki, kj) = (ki0, kj0) moved r cells on through
    a window KW wide (row by row), where oi = ii + PH - ki is an output row (0 <= oi < OH):
    dx[ii, jj] += cols[cols_off + r*ldc + oi*OW + jj + PW - kj] for every jj < W whose oj = jj + PW - kj is
    an output column (0 <= oj < OW). Each row of dx is held in vector registers while its terms are added,
    in r order, then stored once: adding vectors straight into memory, a window column shifted one cell
    from the last, stalled on every load (0.76 ms per seed-cnn conv2 group against 0.42 for scalar adds)."""
    if not _float_arrays(dx, cols):
        return None
    sig = types.void(dx, dx_off, cols, cols_off, ldc, count, ki0, kj0, KW, H, W, OH, OW, PH, PW)

    def codegen(context, builder, signature, args):
        tys = signature.args
        dtype = tys[0].dtype
        lanes = TILE_LANES if dtype == types.float32 else TILE_LANES // 2
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vec = ir.VectorType(context.get_value_type(dtype), lanes)
        mask_ty = ir.VectorType(ir.IntType(1), lanes)
        suffix = f"v{lanes}{'f32' if dtype == types.float32 else 'f64'}.p0"
        pointer = vec.as_pointer()
        load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [pointer, i32, mask_ty, vec]),
                                              f"llvm.masked.load.{suffix}")
        store = cgutils.get_or_insert_function(builder.module,
                                               ir.FunctionType(ir.VoidType(), [vec, pointer, i32, mask_ty]),
                                               f"llvm.masked.store.{suffix}")
        align, zero, one = ir.Constant(i32, 1), ir.Constant(vec, None), ir.Constant(i64, 1)
        lane = ir.Constant(ir.VectorType(i32, lanes), list(range(lanes)))  # lane + j0 = the column in a row

        def lanes_below(value):  # the lanes whose index is below value (an i64)
            return builder.icmp_signed("<", lane, _splat(builder, builder.trunc(value, i32), lanes))

        (dx_off, cols_off, ldc, count, ki0, kj0, KW, H, W, OH, OW, PH, PW) = (
            _i64(context, builder, args[i], tys[i]) for i in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14))
        dx_data, cols_data = _flat(context, builder, tys[0], args[0]), _flat(context, builder, tys[2], args[2])
        width_vectors = builder.udiv(builder.add(W, ir.Constant(i64, lanes - 1)), ir.Constant(i64, lanes))
        acc_slot = cgutils.alloca_once(builder, vec)
        ki_slot, kj_slot = cgutils.alloca_once(builder, i64), cgutils.alloca_once(builder, i64)
        with cgutils.for_range(builder, H) as row:
            ii = row.index
            with cgutils.for_range(builder, width_vectors) as part:
                j0 = builder.mul(part.index, ir.Constant(i64, lanes))
                in_row = lanes_below(builder.sub(W, j0))
                row_start = builder.add(dx_off, builder.add(builder.mul(ii, W), j0))
                target = builder.bitcast(builder.gep(dx_data, [row_start]), pointer)
                builder.store(builder.call(load, [target, align, in_row, zero]), acc_slot)
                # the terms of row ii: ki from ii + PH - OH + 1 to ii + PH, a run of r (ki grows with r)
                ki_first = builder.add(builder.sub(builder.add(ii, PH), OH), one)
                first_r = builder.sub(builder.mul(builder.sub(ki_first, ki0), KW), kj0)
                end_r = builder.sub(builder.mul(builder.add(builder.sub(builder.add(ii, PH), ki0), one), KW), kj0)
                later = builder.icmp_signed(">", first_r, ir.Constant(i64, 0))
                r0 = builder.select(later, first_r, ir.Constant(i64, 0))
                r1 = builder.select(builder.icmp_signed("<", end_r, count), end_r, count)
                builder.store(builder.select(later, ki_first, ki0), ki_slot)
                builder.store(builder.select(later, ir.Constant(i64, 0), kj0), kj_slot)
                with cgutils.for_range_slice(builder, r0, r1, ir.Constant(i64, 1), inc=True) as (r, _):
                    ki, kj = builder.load(ki_slot), builder.load(kj_slot)
                    oi = builder.sub(builder.add(ii, PH), ki)
                    shift = builder.sub(kj, PW)  # lane jj reads output column jj - shift: lanes from shift - j0 on,
                    end = builder.add(shift, OW)  # up to shift + OW - j0 and the row's end
                    end = builder.select(builder.icmp_signed("<", end, W), end, W)
                    reads = builder.and_(builder.not_(lanes_below(builder.sub(shift, j0))),
                                         lanes_below(builder.sub(end, j0)))
                    start = builder.add(cols_off, builder.add(builder.mul(r, ldc),
                                                              builder.sub(builder.add(builder.mul(oi, OW), j0), shift)))
                    source = builder.bitcast(builder.gep(cols_data, [start]), pointer)
                    acc = builder.load(acc_slot)
                    added = builder.fadd(acc, builder.call(load, [source, align, reads, zero]))
                    builder.store(builder.select(reads, added, acc), acc_slot)  # other lanes exactly as they were
                    kj_next = builder.add(kj, one)
                    wraps = builder.icmp_signed("==", kj_next, KW)
                    builder.store(builder.select(wraps, ir.Constant(i64, 0), kj_next), kj_slot)
                    builder.store(builder.select(wraps, builder.add(ki, one), ki), ki_slot)
                builder.call(store, [builder.load(acc_slot), target, align, in_row])
        return context.get_dummy_value()

    return sig, codegen


# cells copy_run moves at once: a window row of up to RUN cells, or a stretch of an output row
RUN = 8


@intrinsic
def copy_run(typingctx, dst, dst_off, src, src_off):
    """dst[dst_off : dst_off + RUN] = src[src_off : src_off + RUN] (flat indices into C-contiguous arrays
    of one float dtype) as one unaligned vector load and store. The unrolls copy runs of RUN cells or
    fewer with it, in order, each copy overwriting what the one before wrote past its run; the caller
    keeps both ends in bounds."""
    if not all(isinstance(t, types.Array) and t.layout == "C" for t in (dst, src)) or dst.dtype != src.dtype:
        return None
    sig = types.void(dst, dst_off, src, src_off)

    def codegen(context, builder, signature, args):
        tys = signature.args
        vec = ir.VectorType(context.get_value_type(tys[0].dtype), RUN)

        def at(index, offset):
            data = context.make_array(tys[index])(context, builder, args[index]).data
            where = builder.gep(data, [context.cast(builder, args[offset], tys[offset], types.intp)])
            return builder.bitcast(where, vec.as_pointer())

        builder.store(builder.load(at(2, 3), align=1), at(0, 1), align=1)
        return context.get_dummy_value()

    return sig, codegen


@helper
def adjacent_runs(offsets, starts):
    """Splits offsets into runs of consecutive values (a cell and the next in x), at most RUN long:
    starts[r] is the index where run r begins; returns the number of runs."""
    runs, i = 0, 0
    while i < offsets.size:
        starts[runs] = i
        runs += 1
        length = 1
        while i + length < offsets.size and length < RUN and offsets[i + length] == offsets[i] + length:
            length += 1
        i += length
    return runs


@helper
def pack_rows(m, rows, depth, packed):
    """m[:rows, :depth] -> packed (ceil(rows / width), depth, width), width = packed.shape[2] (ROWS, or
    COLUMNS for a product's b): panels of `width` rows of m, each k(depth)-major, zeros past row `rows`
    (a conv's weights, or the filters of a gradient)."""
    width = packed.shape[2]
    for panel in range(packed.shape[0]):
        for kk in range(depth):
            for i in range(width):
                r = panel * width + i
                packed[panel, kk, i] = m[r, kk] if r < rows else 0.0


@helper
def pack_columns(m, columns, depth, packed):
    """m[:depth, :columns] -> packed (ceil(columns / width), depth, width), width = packed.shape[2] (ROWS
    or COLUMNS): panels of `width` columns of m, zeros past column `columns`."""
    width = packed.shape[2]
    for panel in range(packed.shape[0]):
        for kk in range(depth):
            for j in range(width):
                q = panel * width + j
                packed[panel, kk, j] = m[kk, q] if q < columns else 0.0


@helper
def unroll_panel(x, s0, columns, panel, packed, corners, table, C, H, W, SH, SW, PH, PW, OH, OW):
    """Columns panel*COLUMNS .. +COLUMNS of the im2col matrix of samples s0, s0+1, ... of x (n, C, H, W)
    -> packed (K, COLUMNS), k = (c, ki, kj) and column p = (sample - s0, oi, oj); `columns` is how many
    are real: the panel's others repeat the last real one (their outputs are never read). `corners`
    (3, COLUMNS) int64 scratch: each column's window corner as a flat index into x, and its row and
    column in the image; `table` as window_table gives it. Each row of the panel is a gather from the
    corners, written contiguously; with padding, cells outside the image read zero. Where the columns
    are stretches of output rows (stride 1) and a row's cells all lie in the image, the row is copied a
    run at a time (copy_run: 2-3x faster than cell by cell)."""
    positions = OH * OW
    xf = x.reshape(-1)
    pf = packed.reshape(-1)
    padded = PH > 0 or PW > 0
    for j in range(COLUMNS):
        p = min(panel * COLUMNS + j, columns - 1)
        i0, j0 = ((p % positions) // OW) * SH - PH, (p % OW) * SW - PW
        corners[0, j] = (s0 + p // positions) * C * H * W + i0 * W + j0
        corners[1, j] = i0
        corners[2, j] = j0
    starts = np.empty(COLUMNS, np.int64)
    runs = adjacent_runs(corners[0], starts)
    top, bottom, left, right = corners[1].min(), corners[1].max(), corners[2].min(), corners[2].max()
    reach = corners[0].max() + RUN
    rows = packed.shape[0]
    for kk in range(rows):
        offset = table[0, kk]
        ki, kj = table[1, kk], table[2, kk]
        if (runs <= COLUMNS // 2 and kk + 1 < rows and reach + offset <= xf.size and top + ki >= 0
                and bottom + ki < H and left + kj >= 0 and right + kj < W):
            for r in range(runs):  # in column order: a run's copy overwrites what the one before wrote past it
                copy_run(pf, kk * COLUMNS + starts[r], xf, corners[0, starts[r]] + offset)
        elif not padded:
            for j in range(COLUMNS):
                packed[kk, j] = xf[uint64(corners[0, j] + offset)]
        else:
            for j in range(COLUMNS):
                ii, jj = corners[1, j] + ki, corners[2, j] + kj
                packed[kk, j] = xf[uint64(corners[0, j] + offset)] if 0 <= ii < H and 0 <= jj < W else 0.0


@helper
def window_table(table, C, H, W, KH, KW):
    """table (3, K'): for each k = (c, ki, kj) of an im2col row, its cell's flat offset in a sample from
    the window's corner, (c*H + ki)*W + kj, then ki and kj; k past C*KH*KW repeats the last."""
    last = C * KH * KW - 1
    for kk in range(table.shape[1]):
        q = min(kk, last)
        c, rest = q // (KH * KW), q % (KH * KW)
        table[0, kk] = (c * H + rest // KW) * W + rest % KW
        table[1, kk] = rest // KW
        table[2, kk] = rest % KW


@helper
def unroll_transposed(x, s0, g, panel, packed, table, C, H, W, SH, SW, PH, PW, OH, OW):
    """Rows panel*COLUMNS .. +COLUMNS of the im2col matrix of samples s0 .. s0+g, transposed -> packed
    (>= g*P, COLUMNS): packed[j*P + p, q] is sample s0+j's cell under k = panel*COLUMNS + q of the window
    at position p (`table`: see window_table); padding reads zero. A window row's cells are adjacent in
    x, so a position whose window lies in the image is copied a window row at a time (copy_run: 3x
    faster than cell by cell on seed-cnn's conv2)."""
    xf = x.reshape(-1)
    pf = packed.reshape(-1)
    k0 = panel * COLUMNS
    padded = PH > 0 or PW > 0
    positions = OH * OW
    offsets = table[0, k0:k0 + COLUMNS]
    starts = np.empty(COLUMNS, np.int64)
    runs = adjacent_runs(offsets, starts)
    top, bottom = table[1, k0:k0 + COLUMNS].min(), table[1, k0:k0 + COLUMNS].max()
    left, right = table[2, k0:k0 + COLUMNS].min(), table[2, k0:k0 + COLUMNS].max()
    reach = offsets.max() + RUN
    last = g * positions - 1  # its copies would run past the rows asked for
    for j in range(g):
        sample = (s0 + j) * C * H * W
        for p in range(positions):
            row = j * positions + p
            i0 = (p // OW) * SH - PH
            j0 = (p % OW) * SW - PW
            corner = sample + i0 * W + j0
            if (runs <= COLUMNS // 2 and row < last and corner + reach <= xf.size and i0 + top >= 0
                    and i0 + bottom < H and j0 + left >= 0 and j0 + right < W):
                for r in range(runs):  # in k order, as in unroll_panel
                    copy_run(pf, row * COLUMNS + starts[r], xf, corner + offsets[starts[r]])
            elif not padded:
                for q in range(COLUMNS):
                    packed[row, q] = xf[uint64(corner + table[0, k0 + q])]
            else:
                for q in range(COLUMNS):
                    ii, jj = i0 + table[1, k0 + q], j0 + table[2, k0 + q]
                    packed[row, q] = xf[uint64(corner + table[0, k0 + q])] if 0 <= ii < H and 0 <= jj < W else 0.0

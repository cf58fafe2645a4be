"""embedding: a lookup table. Layouts: idx (n, T) int32 indices (staged from the int64 input, each
in [0, rows), checked when the data loads); w (rows, D); y, dy (n, T, D).

The backward scatters each looked-up row's gradient into dw (indices may repeat: rows add up);
the row `padding` (-1: none) gets no gradient, as PyTorch's padding_idx. The first write of dw
(acc false) zeroes it first, since a scatter touches only the rows the batch looked up.
"""

from netc.jit import kernel


@kernel
def embedding_forward(idx, w, y):
    n, steps = idx.shape
    dim = w.shape[1]
    for s in range(n):
        for t in range(steps):
            row = idx[s, t]
            for d in range(dim):
                y[s, t, d] = w[row, d]


@kernel
def embedding_backward(idx, dy, dw, acc, padding):
    n, steps = idx.shape
    rows, dim = dw.shape
    if not acc:
        for r in range(rows):
            for d in range(dim):
                dw[r, d] = 0.0
    for s in range(n):
        for t in range(steps):
            row = idx[s, t]
            if row != padding:
                for d in range(dim):
                    dw[row, d] += dy[s, t, d]

"""A scan's data movement: sequences to and from the time-major storage its loop works in, the
gradient that enters each step, and the zeroing of accumulated gradients.

The loop keeps every tensor of its block time-major, (steps, batch, features), so the block's
kernels see the same contiguous (n, features) rows at each step as anywhere else.
"""

from netc.jit import kernel


@kernel
def to_time_major(x, y, n):
    """y[t, b] = x[b, t] for the first n samples: x (batch, T, F) as the layers before the scan
    hold it, y (T, batch, F)."""
    steps, features = x.shape[1], x.shape[2]
    for t in range(steps):
        for b in range(n):
            for f in range(features):
                y[t, b, f] = x[b, t, f]


@kernel
def from_time_major(x, first, y, n):
    """y[b, s] = x[first + s, b] for the first n samples: x (slots, batch, F), y (batch, S, F); S is
    T (every step's output) or 1 (the last step's)."""
    steps, features = y.shape[1], y.shape[2]
    for b in range(n):
        for s in range(steps):
            for f in range(features):
                y[b, s, f] = x[first + s, b, f]


@kernel
def seed_step_grad(dx, carry, carry_on, dy, t, dy_on):
    """The gradient entering step t of a tensor the loop hands on: what the next step sent back
    through the state (`carry`) plus what the scan's output received at step t (dy[:, t]).
    dx, carry (n, F); dy (n, S, F)."""
    n, features = dx.shape
    for b in range(n):
        for f in range(features):
            if carry_on and dy_on:
                dx[b, f] = carry[b, f] + dy[b, t, f]
            elif carry_on:
                dx[b, f] = carry[b, f]
            elif dy_on:
                dx[b, f] = dy[b, t, f]
            else:
                dx[b, f] = 0.0


@kernel
def scatter_step_grad(dx, dy, t, acc):
    """dy[:, t] (+)= dx: a step's input gradient back into its sequence's. dx (n, F), dy (n, T, F)."""
    n, features = dx.shape
    for b in range(n):
        for f in range(features):
            dy[b, t, f] = dy[b, t, f] + dx[b, f] if acc else dx[b, f]


@kernel
def zero_fill(x):
    """x = 0; flat. Gradients every step adds to start from zero."""
    for i in range(x.size):
        x[i] = 0.0

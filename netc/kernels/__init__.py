"""Compiled kernels, one module per op family. Shapes are noted per array:
n is the (runtime) batch size, every other size is passed in by the generated plan.
Backward kernels take `acc_*` flags: False writes the gradient, True adds to it
(the compiler passes False to the first writer of each gradient buffer).
"""

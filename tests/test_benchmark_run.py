"""benchmarks/run.py's account of the machine: what it says when the environment pins OpenBLAS's
kernels below what the CPU runs (the figures then measure the pin, not the hardware)."""

from __future__ import annotations

from benchmarks.run import blas_pin_text


def test_no_line_when_nothing_pins_openblas(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert blas_pin_text() is None


def test_a_pin_is_named_with_the_kernels_openblas_picks_without_it(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    text = blas_pin_text()
    assert "OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512" in text
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py" in text
    unpinned = text.split("unpinned, it runs ")[1].split(" kernels")[0]
    # read by a process without the pin: a kernel family of OpenBLAS's (Haswell itself on an AVX2 CPU)
    assert unpinned and unpinned != "(could not tell)" and " " not in unpinned.replace(" / ", "/")


def test_a_probe_that_fails_says_it_could_not_tell(monkeypatch):
    import subprocess

    import benchmarks.run as run

    def fails(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    monkeypatch.setattr(run.subprocess, "run", fails)
    text = blas_pin_text()
    assert "(OPENBLAS_CORETYPE=Haswell)" in text and "unpinned, it runs (could not tell) kernels" in text

"""`netc cache info` and `netc cache clear`, on a cache folder of the test's own."""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

import netc.cli  # noqa: F401  (registers every command)
from netc.cli import cache_commands
from netc.cli.app import app
from netc.codecache import code_digest

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("NETC_CACHE_DIR", str(root))
    return root


def _fill(root):
    """What a run leaves: a plan module, a fused marker, machine code under the current key and an old one."""
    (root / "plans").mkdir(parents=True)
    (root / "plans" / "netc_plan_abc.py").write_text("x = 1\n")
    (root / "plans" / "netc_plan_abc.float32.fused").write_text("compiled\n")
    key = root / "numba" / code_digest()[:16] / "kernels-0123"
    key.mkdir(parents=True)
    (key / "conv.conv_forward-10.py311.nbi").write_bytes(b"\0" * 2048)
    (root / "numba" / "0000000000000000").mkdir()
    (root / "mine.txt").write_text("not netc's")


def test_info_of_an_empty_cache(cache):
    result = runner.invoke(app, ["cache", "info"])
    assert result.exit_code == 0, result.output
    assert f"cache: {cache} (empty: nothing compiled yet)" in result.output
    assert "total: 0 B; 0 fused loops ready" in result.output
    assert not cache.exists(), "info creates nothing"


def test_info_counts_each_part_and_names_the_key(cache):
    _fill(cache)
    result = runner.invoke(app, ["cache", "info"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert lines["plans/"][1:4] == ["│", "2", "│"] and lines["numba/"][1:4] == ["│", "1", "│"]
    assert "2.0 KiB" in result.output and "1 fused loop ready" in result.output
    assert f"current key: numba/{code_digest()[:16]}" in result.output and "1 older key unused" in result.output


def test_clear_removes_netcs_parts_only(cache):
    _fill(cache)
    result = runner.invoke(app, ["cache", "clear", "--yes"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("cleared 2.0 KiB under")
    assert sorted(p.name for p in cache.iterdir()) == ["mine.txt"]
    again = runner.invoke(app, ["cache", "clear", "--yes"])
    assert again.exit_code == 0 and "holds nothing to clear" in again.output


def test_clear_asks_first(cache):
    _fill(cache)
    result = runner.invoke(app, ["cache", "clear"], input="n\n")
    assert result.exit_code == 1 and "remove 2.0 KiB of compiled code under" in result.output
    assert (cache / "plans" / "netc_plan_abc.py").exists()


def test_clear_that_cannot_remove_says_so(cache, monkeypatch):
    _fill(cache)

    def refuse(path, onerror):  # what rmtree reports on a folder it may not change
        onerror(shutil.rmtree, str(path / "x"), (PermissionError, PermissionError(13, "Permission denied"), None))

    monkeypatch.setattr(cache_commands.shutil, "rmtree", refuse)
    result = runner.invoke(app, ["cache", "clear", "--yes"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "error[E-CACHE]: could not remove 2 cache entries" in text and "Permission denied" in text
    assert "hint: check the folder's permissions" in text


def test_the_warmup_specs_call_every_kernel_in_both_dtypes():
    """`netc warmup` compiles the whole library: its specs' plans call every kernel a plan may import."""
    from netc.compiler.codegen import KERNEL_MODULES
    from netc.compiler.steps import cores
    from netc.jit import blas_small_kernels
    from netc.runtime.warmup import entries

    found = entries()
    every = {(module, name) for module, names in KERNEL_MODULES.items() for name in names}
    if cores() == 1:  # one core: recurrent layers always run as one chunk (the serial twins)
        every -= {("netc.kernels.recurrent", "recurrent_forward"), ("netc.kernels.recurrent", "recurrent_backward")}
    if cores() == 1 or not blas_small_kernels():  # linear layers whole (netc.ops.dense._parts)
        every -= {("netc.kernels.dense", "linear_forward_parts"), ("netc.kernels.dense", "linear_backward_parts")}

    def floats(types) -> set[str]:
        return {str(t.dtype) for t in types if str(getattr(t, "dtype", "")).startswith("float")}

    # every spec is recorded in both dtypes, so a kernel never called with float32 is typed by float64
    # alone in every plan (the H arena, the losses' values: weighted_total) and serves both
    typed_by_float32 = {(module, name) for module, name, types in found if "float32" in floats(types)}
    serves_both = {(module, name) for module, name, _ in found} - typed_by_float32
    for dtype in ("float32", "float64"):  # a kernel without float arrays (seed_rng) serves both
        called = {(module, name) for module, name, types in found if floats(types) in ({dtype}, set())}
        assert called | serves_both == every, sorted(every - called - serves_both)
    assert ("netc.kernels.loss", "weighted_total") in serves_both and ("netc.kernels.loss", "cross_entropy") not in serves_both


@pytest.mark.compiled
def test_warmup_compiles_what_is_missing_then_nothing(tmp_path, monkeypatch):
    """On an empty cache (the embedding spec only, to keep it short): two processes compile every
    entry and mark it; a second warmup finds them all, and a model of that spec compiles nothing."""
    from netc.codecache import cache_root
    from netc.runtime import warmup as library

    monkeypatch.setattr(library, "SPECS", {"embedding": library.SPECS["embedding"]})
    saved = os.environ.get("NETC_CACHE_DIR")
    os.environ["NETC_CACHE_DIR"] = str(tmp_path / "cache")
    cache_root.cache_clear()
    try:
        seen = []
        compiled, ready = library.warmup(lambda done, total: seen.append((done, total)))
        assert compiled == len(library.entries()) > 10 and ready == 0
        assert seen[-1] == (compiled, compiled)
        result = runner.invoke(app, ["warmup"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"netc's kernels are compiled for this machine ({compiled} signatures)"
    finally:
        if saved is None:
            del os.environ["NETC_CACHE_DIR"]
        else:
            os.environ["NETC_CACHE_DIR"] = saved
        cache_root.cache_clear()


def test_kernels_that_cannot_be_compiled_ahead_are_reported(tmp_path, monkeypatch):
    """No process to spare: compile_missing hands back what is not compiled (training compiles it on
    first use), and `netc warmup` says so as an error instead of claiming success."""
    from netc.compiler import kernel_library
    from netc.runtime import warmup as library

    def no_process(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(kernel_library.subprocess, "Popen", no_process)
    monkeypatch.setattr(library, "SPECS", {"embedding": library.SPECS["embedding"]})
    monkeypatch.setattr(kernel_library, "missing", lambda entries: list(entries))  # as on an empty cache
    entries = library.entries()
    assert kernel_library.compile_missing(entries) == entries
    result = runner.invoke(app, ["warmup"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"error[E-CACHE]: {len(entries)} of {len(entries)} kernel signatures were not compiled" in text
    assert "hint: check free disk space" in text

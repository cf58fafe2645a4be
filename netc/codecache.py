"""Where netc keeps compiled code on disk, and how that cache is kept honest.

Two kinds of entries live under one root (`NETC_CACHE_DIR`, default `~/.cache/netc`):

- `plans/`: generated plan modules (`compiler/cache.py`);
- `numba/<key>/`: Numba's machine code for the kernels and the plans. `<key>` hashes what
  Numba's own cache key leaves out: netc's and Numba's versions, the source of every kernel
  (a kernel's entry does not notice a change in a kernel it calls), the jit flags and
  `NUMBA_OPT`. Nothing is written into the source tree (site-packages may be read-only).

Every machine-code entry is written with a header holding a SHA-256 of its bytes, its
file name and the signature it was compiled for. An entry that does not verify (truncated,
garbled, emptied, or swapped with another function's) or an index that does not unpickle
is reported once ("cache entry X was unreadable; recompiling") and compiled again, never
run. A root that cannot be written (read-only, a file, a full disk) gives way to a private
temporary folder with a one-line warning; a write that fails later costs only the cache.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import tempfile
from functools import lru_cache
from pathlib import Path

from numba.core import caching

import netc
from netc.errors import warn_once
from netc.kernels.gemm_sizes import TILE_LANES

_MAGIC = b"netc-numba-cache-1\n"
save_failures = 0  # machine code this process compiled but could not keep (a full disk): nothing to mark ready


def wanted_root() -> Path:
    """The cache root the user asked for (NETC_CACHE_DIR, or ~/.cache/netc)."""
    return Path(os.environ.get("NETC_CACHE_DIR") or Path.home() / ".cache" / "netc")


def _unusable(folder: Path) -> str | None:
    """Why `folder` cannot hold the cache (None when it can): it is created and written to once."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _private_temp_root() -> Path:
    """/tmp/netc-cache-<uid> when it is ours alone (machine code from a folder others can write
    would be run as our own), else a fresh folder."""
    shared = Path(tempfile.gettempdir()) / f"netc-cache-{os.getuid()}"
    try:
        shared.mkdir(mode=0o700, exist_ok=True)
        info = shared.lstat()
        if (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
                and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and _unusable(shared) is None):
            return shared
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="netc-cache-"))


@lru_cache(maxsize=1)
def cache_root() -> Path:
    """The folder that holds every cache entry, decided once per process."""
    wanted = wanted_root()
    problem = _unusable(wanted)
    if problem is None:
        return wanted
    fallback = _private_temp_root()
    warn_once(f"the cache folder {wanted} is not usable ({problem}); using a temporary cache in {fallback} "
              "(set NETC_CACHE_DIR to a writable folder to keep compiled code between runs)")
    return fallback


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A hash of everything compiled code depends on beyond its own function's source."""
    from netc import jit

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"netc {netc.__version__}|{numba_version()}|opt {os.environ.get('NUMBA_OPT', '')}|"
                            f"flags {sorted(jit.FASTMATH)}".encode())
    for path in sorted((package / "kernels").glob("*.py")) + [package / "jit.py", Path(__file__).resolve()]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def numba_version() -> str:
    import numba

    return numba.__version__


def numba_cache_dir() -> Path:
    return cache_root() / "numba" / code_digest()[:16]


# --------------------------------------------------------------------------- the Numba side


class _Locator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Entries of a function go to numba/<key>/<its source folder's name>-<hash of its path>/."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        folder = os.path.dirname(os.path.abspath(py_file))
        tag = hashlib.sha256(folder.encode()).hexdigest()[:10]
        self._cache_path = str(numba_cache_dir() / f"{os.path.basename(folder)}-{tag}")

    def get_cache_path(self):
        return self._cache_path


class _CacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_Locator]


class _CheckedFile(caching.IndexDataCacheFile):
    """Numba's index + data files, with every data file verified before it is unpickled. Each key also
    holds the shape of netc's GEMM micro-kernel tiles (netc.kernels.gemm_sizes, from the CPU's flags),
    which kernels compile in as constants and plans size their scratch by: Numba's key has the target
    CPU's name and features, and two machines of other flags that share a cache under one
    NUMBA_CPU_NAME must not load each other's tiled kernels."""

    def load(self, key):
        key = (key, TILE_LANES)
        try:
            overloads = self._load_index()
        except Exception as exc:  # a damaged index: pickle can raise almost anything
            self._unreadable(self._index_name, exc)
            return None
        name = overloads.get(key)
        if name is None:
            return None
        try:
            with open(self._data_path(name), "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._unreadable(name, exc)
            return None
        payload = self._verified(raw, name, key)
        if payload is None:
            self._unreadable(name, "its checksum does not match")
            return None
        try:
            return pickle.loads(payload)
        except Exception as exc:
            self._unreadable(name, exc)
            return None

    def save(self, key, data):
        key = (key, TILE_LANES)
        try:
            overloads = self._load_index()
        except Exception:  # damaged: start the index again (load() already said so)
            overloads = {}
        name = overloads.get(key)
        if name is None:
            taken = set(overloads.values())
            name = next(self._data_name(i) for i in range(1, len(taken) + 2) if self._data_name(i) not in taken)
            overloads[key] = name
            self._save_index(overloads)
        payload = self._dump(data)
        with self._open_for_write(self._data_path(name)) as handle:
            handle.write(_MAGIC + self._checksum(payload, name, key).encode() + b"\n" + payload)

    def _checksum(self, payload: bytes, name: str, key) -> str:
        return hashlib.sha256(f"{name}|{key!r}|".encode() + payload).hexdigest()

    def _verified(self, raw: bytes, name: str, key) -> bytes | None:
        if not raw.startswith(_MAGIC):
            return None
        head, _, payload = raw[len(_MAGIC):].partition(b"\n")
        return payload if head.decode("ascii", "replace") == self._checksum(payload, name, key) else None

    def _unreadable(self, name: str, why) -> None:
        warn_once(f"cache entry {os.path.join(self._cache_path, name)} was unreadable ({why}); recompiling")


class FunctionCache(caching.FunctionCache):
    """Numba's per-function cache in netc's folder, with checked entries; a cache that cannot be
    read or written costs a compile, never the run."""

    _impl_class = _CacheImpl

    def __init__(self, py_func, variant: str = ""):
        super().__init__(py_func)
        # a variant (one function compiled with other flags) has files of its own: Numba's key holds
        # neither the flags nor the variant, so the two would overwrite each other's entries
        self._cache_file = _CheckedFile(self._cache_path, self._impl.filename_base + (f".{variant}" if variant else ""),
                                        self._impl.locator.get_source_stamp())

    def load_overload(self, sig, target_context):
        # Numba's load_overload first refreshes the target context (imports every lowering module
        # and installs their registries: 0.3 s, once per process) although rebuilding machine code
        # needs none of it; a compile refreshes it itself (numba.core.compiler), so a process that
        # only loads cached code skips it.
        try:
            from numba.core.runtime import rtsys

            rtsys.initialize(target_context)  # what loaded code does need: the runtime (allocation)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        except Exception as exc:  # e.g. machine code that does not link: compile it again
            warn_once(f"cache entry for {self._name} {sig} was unreadable ({exc}); recompiling")
            return None

    def save_overload(self, sig, data):
        global save_failures
        try:
            super().save_overload(sig, data)
        except OSError as exc:
            save_failures += 1
            warn_once(f"could not write to the cache in {self._cache_path} ({exc.strerror or exc}); "
                      "compiled code is not kept for the next run")


def use_netc_cache(dispatcher, variant: str = "") -> None:
    """Give a `cache=True` dispatcher netc's cache instead of Numba's default one; `variant` names a
    second compilation of the same function (netc.jit: a parallel kernel's serial twin)."""
    try:
        dispatcher._cache = FunctionCache(dispatcher.py_func, variant)
    except Exception as exc:  # no usable folder at all: compile every time rather than fail
        warn_once(f"compiled code cannot be cached ({exc}); every run compiles")
        dispatcher._cache = caching.NullCache()

"""Where trials run: an embedded Dask LocalCluster, or a running Dask cluster by its scheduler's address.

The embedded cluster opens nothing to the network: its scheduler, nannies and workers listen on
127.0.0.1 (ports the system picks), the dashboard is off unless asked for (and then on 127.0.0.1
too), and each worker is a process with one thread. Its workers start with SIGINT ignored, so a
Ctrl-C in the terminal reaches the sweep (which stops them) rather than killing them mid-write;
the scheduler treats a worker lost under a task as the end of that try (allowed-failures 0), and
the sweep retries the trial once elsewhere.

A scheduler address connects to a running cluster. `tls://` uses Dask's TLS `Security`: the CA,
certificate and key from the command line, or else from Dask's configuration
(`distributed.comm.tls.*`). A plain `tcp://` address outside loopback works but warns, once, that
the traffic (specs, metrics, checkpoints) is not encrypted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
from dataclasses import dataclass

from netc.errors import Diagnostic, Location, RunError
from netc.sweep import INSTALL_HINT

# what the embedded cluster's worker processes start with: one thread each (NUMBA_NUM_THREADS must be
# set before Numba loads), no background compiles (see netc.sweep.worker)
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "NETC_BLAS_THREADS": "1", "NETC_BACKGROUND_COMPILE": "0",
              "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
DASHBOARD = "127.0.0.1:8787"
WORKER_WAIT_SECONDS = 60  # how long a sweep on a running cluster waits for its first worker


def require_dask() -> None:
    """Dask, distributed and Optuna, or an E-RUN error that says how to install them."""
    missing = []
    for module in ("dask", "distributed", "optuna"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RunError(Diagnostic("E-RUN", f"netc sweep needs {', '.join(missing)}, which "
                                  f"{'is' if len(missing) == 1 else 'are'} not installed", Location(""),
                                  hint=INSTALL_HINT))


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class TlsFiles:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def given(self) -> bool:
        return any((self.ca, self.cert, self.key))


def address_host(address: str) -> tuple[str, str]:
    """('tcp', '10.0.0.5') from 'tcp://10.0.0.5:8786' (a bare host:port is tcp)."""
    scheme, _, rest = address.partition("://")
    if not rest:
        scheme, rest = "tcp", address
    host = rest
    if host.startswith("["):  # [::1]:8786
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return scheme.lower(), host


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unencrypted_warning(address: str) -> str | None:
    """The one-line warning for a plain address outside loopback, or None."""
    scheme, host = address_host(address)
    if scheme in ("tcp", "ws") and not is_loopback(host):
        return (f"{address} is not encrypted: trial specs, metrics and checkpoints cross the network in the "
                "clear; use tls:// (--tls-ca-file, --tls-cert, --tls-key or Dask's TLS configuration)")
    return None


@dataclass
class Cluster:
    client: object  # distributed.Client
    local: object | None  # the embedded LocalCluster, or None
    address: str
    dashboard: str | None = None

    @property
    def threads(self) -> int:
        """Trial slots: the threads of every worker now connected."""
        try:
            info = self.client.scheduler_info(n_workers=-1)  # every worker (newer Dask lists 5 by default)
        except TypeError:  # Dask before 2025: always every worker
            info = self.client.scheduler_info()
        workers = info["workers"].values()
        return sum(int(w.get("nthreads", 1)) for w in workers)

    def close(self) -> None:
        """Disconnect; the embedded cluster's workers are stopped (killed if they do not stop in time)."""
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.local.close(timeout=10)


@contextlib.contextmanager
def _sigint_ignored():
    """Processes started inside keep SIGINT ignored (an ignored signal stays ignored across exec)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _quiet_logs() -> None:
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler",
                 "distributed.core", "distributed.comm", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


def embedded(workers: int | None = None, dashboard: bool = False, memory_limit: str | None = None) -> Cluster:
    """A LocalCluster on this machine: `workers` processes (default: one per core), one thread each,
    everything on 127.0.0.1, the dashboard only when asked for."""
    import dask
    from distributed import Client, LocalCluster

    _quiet_logs()
    count = workers or cores()
    settings = {"distributed.scheduler.allowed-failures": 0,  # the sweep retries a lost trial itself
                "distributed.admin.tick.limit": "1h"}  # a long compile in a worker is not a hang
    with dask.config.set(settings), _sigint_ignored():
        local = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                             scheduler_port=0, dashboard_address=DASHBOARD if dashboard else None,
                             worker_dashboard_address=None, silence_logs=logging.ERROR, env=dict(WORKER_ENV),
                             memory_limit=memory_limit or "auto",
                             # without the dashboard the scheduler still serves its health routes: on a port
                             # the system picks, on loopback (Dask's default is 8787)
                             scheduler_kwargs=None if dashboard else {"dashboard_address": "127.0.0.1:0"})
        client = Client(local)
    return Cluster(client, local, local.scheduler_address, client.dashboard_link if dashboard else None)


def connect(address: str, tls: TlsFiles | None = None, on_warning=None) -> Cluster:
    """A client of the running cluster at `address` (waits up to WORKER_WAIT_SECONDS for a worker)."""
    import dask
    from distributed import Client
    from distributed.security import Security

    _quiet_logs()
    scheme, _ = address_host(address)
    warning = unencrypted_warning(address)
    if warning and on_warning is not None:
        on_warning(warning)
    security = None
    if tls is not None and tls.given():
        for path in (tls.ca, tls.cert, tls.key):
            if path and not os.path.isfile(path):
                raise RunError(Diagnostic("E-RUN", f"TLS file {path} is not a file", Location(path)))
        security = Security(tls_ca_file=tls.ca, tls_client_cert=tls.cert, tls_client_key=tls.key,
                            require_encryption=True)
    elif scheme == "tls" and not dask.config.get("distributed.comm.tls.ca-file", None):
        raise RunError(Diagnostic("E-RUN", f"{address} needs TLS files: a CA, a client certificate and its key",
                                  Location(address), hint="pass --tls-ca-file, --tls-cert and --tls-key, or set "
                                  "distributed.comm.tls.{ca-file,client.cert,client.key} in Dask's configuration"))
    try:
        client = Client(address, security=security, timeout="20s")
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise RunError(Diagnostic("E-RUN", f"cannot reach the Dask scheduler at {address}: {exc}",
                                  Location(address), hint="is `dask scheduler` running there, and is the "
                                  "address (and for tls://, the certificates) right?")) from None
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except (TimeoutError, OSError):
        client.close()
        raise RunError(Diagnostic("E-RUN", f"the Dask cluster at {address} has no workers (waited "
                                  f"{WORKER_WAIT_SECONDS} s)", Location(address),
                                  hint="start some: dask worker " + address + " --nthreads 1")) from None
    return Cluster(client, None, address)

"""The `netc` console script: hand the command to a netc server when one is up, else run it here.

A fresh `netc` process spends about a second before its first step that has nothing to do with the
spec: importing typer, rich, pydantic, NumPy and Numba, setting up Numba's compiler in the process,
loading machine code. A server (netc.server) has done all of that once and forks a child per
command; this client is the only fresh process, and it imports nothing heavier than `socket`.

The client sends its arguments, folder, environment and umask, and its stdin, stdout and stderr
themselves (passed over a Unix socket): the child reads and writes the user's terminal, pipe or
file directly, so output, colours, progress bars and prompts are exactly a local run's. Signals
the client receives (Ctrl-C, a terminal's hang-up, `kill`) are passed on to the child, Ctrl-Z stops
both, and the child's exit status (or the signal that ended it) becomes the client's.

When no server answers, the command runs in this process as before, and a server is started
afterwards for the next command (it leaves after `NETC_SERVER_IDLE` seconds without one, default
900). `NETC_SERVER=0` never uses nor starts one, nor does a CI job (`CI` set) unless
`NETC_SERVER=1`. A server serves only the same netc: the socket's name hashes the interpreter, netc's
source files (paths, sizes, modification times), the library folders' modification times, and
every environment variable read when modules load (NETC_, NUMBA_, OMP_, OPENBLAS_, locale, ...),
and the process's cores, niceness, resource limits and control group (which a forked child keeps
from the server), so an edited netc, an upgraded library, another setting, `taskset`, `nice`,
`ulimit` or a container gets a server of its own. Servers live in `NETC_SERVER_DIR`
(default `$XDG_RUNTIME_DIR/netc`, else `/tmp/netc-server-<uid>`), a folder that must be the user's
alone; both ends check that the other is the same user.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import struct
import sys

# environment variables read while modules load (so a server started with other values would behave
# otherwise): their values are part of the server's key
KEYED_PREFIXES = ("NETC_", "NUMBA_", "OMP_", "GOMP_", "KMP_", "OPENBLAS_", "GOTO", "MKL_", "NPY_", "PYTHON",
                  "LD_", "LC_", "LANG", "HOME", "TMPDIR", "MPL")
UNKEYED = ("NETC_SERVER", "NETC_SERVER_IDLE", "NETC_SERVER_KEY")  # the client's own settings, and its answer
FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
                  if hasattr(signal, name))
DEFAULT_IDLE = 900.0
RETRY = 3600.0  # seconds before a key whose server could not serve (KEY.failed) gets another try
KEY_LENGTH = 20
SOCKET_PATH_LIMIT = 107  # bytes of a Unix socket's path on Linux (sun_path, less its final NUL)


class Unusable(Exception):
    """The server folder cannot be trusted or made; the message says why."""


def servers_wanted() -> bool:
    """NETC_SERVER=0: none; a CI job (`CI` set) runs once and should leave no process behind, so none
    there either unless NETC_SERVER=1. Linux only (fork, SO_PEERCRED): elsewhere every command runs
    in its own process."""
    if not sys.platform.startswith("linux"):
        return False
    return os.environ.get("NETC_SERVER", "0" if os.environ.get("CI") else "1") != "0"


def server_dir() -> str:
    """The folder of this user's servers (created 0700 when missing)."""
    configured = os.environ.get("NETC_SERVER_DIR")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = configured or (os.path.join(runtime, "netc") if runtime else f"/tmp/netc-server-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise Unusable(f"{folder}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise Unusable(f"{folder} is not a folder of this user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Unusable(f"{folder} can be written by other users")
    if len(socket_path(folder, "k" * KEY_LENGTH).encode()) > SOCKET_PATH_LIMIT:
        raise Unusable(f"{folder} is too long for a socket's path")
    return folder


def server_key(environ=None) -> str:
    """A hash of what a server's behaviour depends on beyond the command: the interpreter, netc's
    sources, the libraries, the environment variables read at import, and the process settings a
    child inherits from the server."""
    environ = os.environ if environ is None else environ
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256(f"{sys.executable}|{sys.version}|{package}".encode())
    for path in sorted(_sources(package)):
        info = os.stat(path)
        digest.update(f"{os.path.relpath(path, package)}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    for folder in sys.path[1:]:  # an install or upgrade (NumPy, Numba...) changes its folder's time
        try:  # (sys.path[0] is the script's folder or the current one: not where libraries come from)
            digest.update(f"{folder}|{os.stat(folder).st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{folder}|-\n".encode())
    for name in sorted(environ):
        if name.startswith(KEYED_PREFIXES) and name not in UNKEYED:
            digest.update(f"{name}={environ[name]}\n".encode())
    digest.update(_process_settings().encode())
    return digest.hexdigest()[:KEY_LENGTH]


def _process_settings() -> str:
    """What a child inherits from the server rather than from its client: the cores it may run on
    (`taskset`), its niceness (`nice`), resource limits (`ulimit`) and control group (a container, a
    Slurm job, a systemd scope). The server has its first client's, so a client with others needs a
    server of its own."""
    import resource

    limits = [resource.getrlimit(getattr(resource, name)) for name in
              ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_FSIZE",
               "RLIMIT_NPROC", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_MEMLOCK") if hasattr(resource, name)]
    try:
        with open("/proc/self/cgroup") as cgroup:
            group = cgroup.read()
    except OSError:
        group = "-"
    return f"cores {sorted(os.sched_getaffinity(0))}|nice {os.getpriority(os.PRIO_PROCESS, 0)}|limits {limits}|{group}"


def _sources(folder: str):
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                yield from _sources(entry.path)
            elif entry.name.endswith(".py"):
                yield entry.path


def socket_path(folder: str, key: str) -> str:
    return os.path.join(folder, f"{key}.sock")


# --------------------------------------------------------------------------- messages: 4-byte length + JSON


def send_message(sock: socket.socket, message: dict, fds=()) -> None:
    data = json.dumps(message).encode()
    data = struct.pack("<I", len(data)) + data
    if fds:
        data = data[socket.send_fds(sock, [data], list(fds)):]
    if data:  # (an empty send to a peer that has read everything and closed would fail)
        sock.sendall(data)


def receive_message(sock: socket.socket, with_fds: bool = False):
    """The next message (None when the other end closed first); with `with_fds`, (message, fds): the
    file descriptors come with the message's first bytes."""
    fds: list[int] = []
    if with_fds:
        buffer, fds, _, _ = socket.recv_fds(sock, 65536, 3)
    else:
        buffer = sock.recv(65536)
    while buffer and (len(buffer) < 4 or len(buffer) < 4 + struct.unpack("<I", buffer[:4])[0]):
        more = sock.recv(65536)
        if not more:
            buffer = b""
        buffer += more
    if not buffer:  # closed before a whole message
        for fd in fds:
            os.close(fd)
        return (None, []) if with_fds else None
    size = struct.unpack("<I", buffer[:4])[0]
    message = json.loads(buffer[4:4 + size])
    return (message, fds) if with_fds else message


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED: pid, uid, gid)."""
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


# --------------------------------------------------------------------------- the client


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        if peer_uid(sock) != os.getuid():  # someone else's socket in our folder: never talk to it
            raise OSError("the server is another user's")
    except OSError:
        sock.close()
        return None
    return sock


def _hand_over(sock: socket.socket) -> bool:
    """Send the command, this process's folder, environment, umask and standard streams; False when
    that failed (a server going away, a closed standard stream): the command then runs here."""
    try:
        request = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
                   "ignored": _ignored()}
        send_message(sock, request, fds=(0, 1, 2))
    except OSError:
        sock.close()
        return False
    return True


def _serve_remotely(sock: socket.socket) -> None:
    """Wait for the command's child, passing signals on, and leave with its status. Returns only when
    the server closed before it started the command (it was leaving as we came): run it here then."""
    child = {"pid": None}
    pending: list[int] = []

    def forward(signum, frame):
        if child["pid"] is None:
            pending.append(signum)
        else:
            _kill(child["pid"], signum)

    def stop(signum, frame):  # Ctrl-Z: stop the child, then this process; continue both on `fg`
        if child["pid"] is not None:
            _kill(child["pid"], signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)

    def resume(signum, frame):
        signal.signal(signal.SIGTSTP, stop)
        if child["pid"] is not None:
            _kill(child["pid"], signal.SIGCONT)

    for signum in set(FORWARDED) - set(_ignored()):  # one ignored here (`nohup`, a background job) is there too
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, stop)
    signal.signal(signal.SIGCONT, resume)
    while True:
        try:
            message = receive_message(sock)
        except OSError:
            message = None
        if message is None and child["pid"] is None:
            for signum in (*FORWARDED, signal.SIGTSTP, signal.SIGCONT):
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            for signum in pending:  # what arrived meanwhile ends this process as it would have
                os.kill(os.getpid(), signum)
            return
        if message is None:
            os.write(2, b"netc: the netc server ended before the command did (NETC_SERVER=0 runs commands "
                        b"without it)\n")
            os._exit(1)
        if "pid" in message:
            child["pid"] = message["pid"]
            for signum in pending:
                _kill(child["pid"], signum)
            pending.clear()
        elif "exit" in message:
            os._exit(message["exit"])
        elif "signal" in message:  # ended by a signal: end the same way, so a shell sees what a local run gives
            signum = message["signal"]
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)


def _ignored() -> list[int]:
    return [int(signum) for signum in FORWARDED if signal.getsignal(signum) == signal.SIG_IGN]


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:  # already gone
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def start_server(folder: str, key: str, environ: dict[str, str]) -> None:
    """A server for the next command: its own session (no terminal, no Ctrl-C), output to a log file.
    None within RETRY seconds of a server for this key that could not serve (KEY.failed says why).
    `environ` is this process's environment before the command ran: the command's imports may have
    set variables of the key (threadpoolctl's KMP_DUPLICATE_LIB_OK), and the server checks its key."""
    import subprocess
    import time

    try:
        if time.time() - os.path.getmtime(os.path.join(folder, f"{key}.failed")) < RETRY:
            return
    except OSError:  # none failed
        pass
    try:
        with open(os.path.join(folder, f"{key}.log"), "ab") as log:
            subprocess.Popen([sys.executable, "-m", "netc.server", key], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log, start_new_session=True, close_fds=True, env=environ,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this netc's
    except OSError:  # no server: every command runs in its own process, as without one
        pass


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:  # Ctrl-C before the command took it over (while Python imports netc): no traceback
        os._exit(130)


def _command_line():
    """netc's command line (`netc.cli.run`), imported with Ctrl-C ending the process at once: pydantic turns
    a KeyboardInterrupt raised while it builds a model class into a SchemaError (a traceback, exit code 1),
    and nothing has been written yet."""
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if default:
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))
    try:
        from netc.cli import run
    finally:
        if default:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return run


def _main() -> None:
    folder = key = None
    if servers_wanted():
        try:
            folder, key = server_dir(), server_key()
            os.environ["NETC_SERVER_KEY"] = key  # which server serves this command (`netc server status`)
        except Unusable as exc:
            os.write(2, f"netc: warning: not using a netc server ({exc}); set NETC_SERVER_DIR to a folder of "
                        f"yours alone, or NETC_SERVER=0\n".encode())
        except OSError:  # netc's sources unreadable: run here
            pass
    if key is not None:
        sock = _connect(socket_path(folder, key))
        if sock is not None and _hand_over(sock):
            _serve_remotely(sock)
    run = _command_line()
    environ = dict(os.environ)
    code = run()
    if key is not None and sys.argv[1:2] != ["server"]:  # `netc server stop` starts none
        start_server(folder, key, environ)
    os._exit(code)


if __name__ == "__main__":
    main()

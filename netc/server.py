"""A netc server: netc loaded once, each command run in a child forked from it.

`python -m netc.server KEY` (started by netc.client after a command ran without one) imports every
command's modules, sets up Numba's compiler and matplotlib's renderer, then waits on the Unix socket
named by its key. Each command arrives with the client's arguments, folder, environment, umask and
standard streams; a forked child takes all of them on and runs the command as `python -m netc.cli`
would, writing straight to the client's terminal, pipe or file. The server reports how the child
ended (its exit code, or the signal that ended it) and the client leaves the same way.

Forking is safe because the server itself never runs a kernel: no OpenMP pool exists when it forks,
the only other threads are the OpenBLAS pools of NumPy and SciPy, idle, which OpenBLAS stops at a
fork and starts again in the child, and the server's own Python code is one thread on a selector.
A child whose client disappears (killed, its terminal closed) gets SIGHUP, as a local run would.

One server per key (a lock file); it leaves after `NETC_SERVER_IDLE` seconds (default 900) with no
command running, or once its socket is removed or taken over, and logs one line per command to
`KEY.log` beside the socket. One that cannot serve (its imports fail, the cache folder is unusable)
leaves `KEY.failed` saying why, and for an hour clients run their commands without starting another.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import socket
import sys
import threading
import time

from netc.client import (DEFAULT_IDLE, FORWARDED, peer_uid, receive_message, send_message, server_dir, server_key,
                         socket_path)

RECHECK = 5.0  # seconds between checks that the socket is still this server's


def preload() -> None:
    """What every command would otherwise import or set up in its own process."""
    import importlib
    import pkgutil

    import netc.cli  # noqa: F401  (every command, typer, rich, pydantic and the spec language)
    import netc.kernels
    from netc.viz import painter

    for module in ("netc.compiler.codegen", "netc.compiler.kernel_library", "netc.runtime.model", "netc.runtime.train",
                   "netc.viz.curves", "multiprocessing", "threadpoolctl", "pydantic.type_adapter", "rich._emoji_codes",
                   "typer._adapters", "typer._click.decorators",
                   *(f"netc.kernels.{info.name}" for info in pkgutil.iter_modules(netc.kernels.__path__))):
        importlib.import_module(module)
    from numba.core.registry import cpu_target

    cpu_target.target_context.refresh()  # Numba's per-process set-up of its compiler (~0.2 s a command)
    cpu_target.typing_context.refresh()
    painter._warm_up()  # matplotlib's fonts and renderer: a child draws curves.png at once
    from PIL import Image

    Image.init()  # the image formats PIL looks up when saving


def main(argv: list[str]) -> None:
    key = argv[0]
    # started in the folder that holds this netc (`-m` put it first on the path, maybe as ""): kept as a
    # path, so that neither the "/" below nor a client's folder decides what a later import finds
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = server_dir()
    environ = dict(os.environ)
    if server_key(environ) != key:  # netc or the environment changed since the client looked
        _log(f"not serving key {key}: netc, its libraries or settings differ from the client's")
        return
    lock = open(os.path.join(folder, f"{key}.lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another server for this key is up, or starting
        return
    os.ftruncate(2, 0)  # the log holds this server's lines only
    try:
        preload()
    except Exception:  # noqa: BLE001 - a broken install: commands run in their own processes
        import traceback

        _give_up(folder, key, traceback.format_exc())
        return
    if server_key(environ) != key:  # netc's sources changed while they were imported
        return
    from netc import codecache, errors

    if codecache.cache_root() != codecache.wanted_root():  # commands would not hear the warning: none served
        _give_up(folder, key, f"not serving: the cache folder {codecache.wanted_root()} is not usable")
        return
    errors._warned.clear()  # warnings of the imports (none expected) are each command's to give
    # variables the imports set (threadpoolctl's KMP_DUPLICATE_LIB_OK): a child sets them as its imports would
    set_by_imports = {name: value for name, value in os.environ.items() if environ.get(name) != value}
    path = socket_path(folder, key)
    try:
        os.unlink(path)  # a socket left by a server that died (the lock says none is up)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    os.chdir("/")  # hold no user folder
    idle = float(os.environ.get("NETC_SERVER_IDLE") or DEFAULT_IDLE)
    _log(f"server {os.getpid()} ready on {path}")
    Server(listener, path, idle, lock, set_by_imports).serve()
    for leftover in (f"{key}.log", f"{key}.lock"):  # an orderly end leaves nothing (a crash keeps its log)
        try:
            os.unlink(os.path.join(folder, leftover))
        except OSError:
            pass


class Server:
    def __init__(self, listener: socket.socket, path: str, idle: float, lock, set_by_imports: dict[str, str]):
        self.listener, self.path, self.idle, self.lock = listener, path, idle, lock
        self.set_by_imports = set_by_imports
        self.started, self.served = time.time(), 0
        self.inode = os.stat(path).st_ino
        self.children: dict[int, socket.socket] = {}  # pid -> the connection of its client
        self.wake_read, self.wake_write = socket.socketpair()
        for end in (self.wake_read, self.wake_write):
            end.setblocking(False)
        self.selector = selectors.DefaultSelector()

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_write.fileno())  # SIGCHLD wakes the selector: a child ended
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # wakes too; then leaves below
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        last = time.monotonic()
        while self.listener is not None or self.children:
            wait = RECHECK if self.children else min(RECHECK, max(0.0, last + self.idle - time.monotonic()))
            for selected, _ in self.selector.select(wait):
                if selected.fileobj is self.listener:
                    self.accept()
                elif selected.fileobj is self.wake_read and signal.SIGTERM in self.drain():
                    self.stop_accepting()
            self.reap()
            if self.children:
                last = time.monotonic()
            if self.listener is not None and (time.monotonic() - last >= self.idle or not self.still_ours()):
                self.stop_accepting()  # idle for long enough, or the socket was removed or taken over

    def drain(self) -> set[int]:
        signals = set()
        try:
            while data := self.wake_read.recv(512):
                signals.update(data)
        except BlockingIOError:
            pass
        return signals

    def still_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(10.0)  # a client that connects and sends nothing does not hold the server
            if peer_uid(conn) != os.getuid():
                raise ValueError("another user")
            request, fds = receive_message(conn, with_fds=True)
            if request is not None and "query" in request and not fds:
                self.answer(conn, request["query"], request.get("asker"))
                return
            if request is None or len(fds) != 3 or not _well_formed(request):
                raise ValueError("an incomplete request")
            pid = os.fork()
        except (OSError, ValueError):
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if pid == 0:
            self.run_child(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.served += 1
        _log(f"{pid}: netc {' '.join(request['argv'])} (in {request['cwd']})")
        try:
            send_message(conn, {"pid": pid})
        except OSError:  # the client is gone: its child hears it (SIGHUP) and ends
            pass

    def answer(self, conn: socket.socket, query: str, asker: int | None) -> None:
        """`netc server status` and `netc server stop` (the asking command, maybe a child, not counted)."""
        if query == "stop":
            self.stop_accepting()
        try:
            send_message(conn, {"pid": os.getpid(), "started": self.started, "served": self.served,
                                "running": len(set(self.children) - {asker}), "idle": self.idle,
                                "stopping": self.listener is None})
        except OSError:
            pass
        conn.close()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            ended = ({"exit": os.WEXITSTATUS(status)} if os.WIFEXITED(status) else {"signal": os.WTERMSIG(status)})
            try:
                send_message(conn, ended)
            except OSError:
                pass
            conn.close()

    def stop_accepting(self) -> None:
        """No new commands (running ones finish): the socket goes, and with it this server's name."""
        if self.listener is None:
            return
        if self.still_ours():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None

    def run_child(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        """In the forked child: become the client's process and run its command (does not return)."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for signum in request.get("ignored", []):  # as the client had them (`nohup netc ...`)
                signal.signal(signum, signal.SIG_IGN)
            self.selector.close()
            self.lock.close()  # the server's alone: a child that outlives it must not keep it
            for sock in (self.listener, self.wake_read, self.wake_write, *self.children.values()):
                sock.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            _reopen_standard_streams()
            os.umask(request["umask"])
            os.environ.clear()
            os.environ.update({**self.set_by_imports, **request["env"]})  # a user's own value wins, as with setdefault
            sys.argv = ["netc", *request["argv"]]
            try:
                os.chdir(request["cwd"])
            except OSError as exc:
                sys.stderr.write(f"netc: cannot enter {request['cwd']}: {exc.strerror}\n")
                sys.stderr.flush()
                os._exit(1)
            conn.settimeout(None)
            threading.Thread(target=_hang_up_when_gone, args=(conn,), daemon=True).start()
            from netc.cli import run

            code = run()
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001 - what a fresh process would print, then its exit code
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _give_up(folder: str, key: str, why: str) -> None:
    """No server for this key: KEY.failed says why, and clients start none for a while
    (netc.client.RETRY) instead of one per command, each importing netc to fail the same way."""
    _log(why.rstrip())
    with open(os.path.join(folder, f"{key}.failed"), "w") as failed:
        failed.write(why)


def _well_formed(request) -> bool:
    """A command request as netc.client sends it (anything else from a process of this user is dropped)."""
    return (isinstance(request, dict) and isinstance(request.get("argv"), list)
            and all(isinstance(arg, str) for arg in request["argv"]) and isinstance(request.get("cwd"), str)
            and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())
            and isinstance(request.get("umask"), int)
            and all(signum in FORWARDED for signum in request.get("ignored", [])))


def _reopen_standard_streams() -> None:
    """sys.stdin/stdout/stderr on the client's streams (now fds 0-2), buffered as Python buffers them
    in a fresh process: stdout by lines on a terminal, else by blocks; stderr by lines."""
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        old = getattr(sys, name)
        lines = name == "stderr" or (name == "stdout" and os.isatty(fd))
        stream = open(fd, mode, buffering=1 if lines else -1, encoding=old.encoding, errors=old.errors,
                      closefd=False)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _hang_up_when_gone(conn: socket.socket) -> None:
    """The client never sends after its request: end of stream means it is gone."""
    try:
        while conn.recv(512):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGHUP)


def _log(line: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(0)  # without unloading Numba's and matplotlib's modules (0.3-0.5 s nobody waits for)

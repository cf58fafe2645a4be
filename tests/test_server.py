"""The netc server (netc.server) and the `netc` client (netc.client): a command served by a child of
the server behaves as the same command run in a process of its own (output, exit code, folder,
standard input, signals), a server that dies or idles is replaced or leaves cleanly, and folders that
are not the user's alone are refused. The other tests run with NETC_SERVER=0 (conftest)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from netc import client

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netc servers run on Linux only")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
BAD_SPEC = """netc: 1
name: bad
inputs:
  x: {shape: [2]}
layers:
  - {name: fc, op: linear, out: 2, colour: red}
loss: {op: mse, input: fc, target: x}
"""


def _netc(args, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netc", *args], env=env, capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 180), **kwargs)


def _wait(condition, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Servers:
    """A server folder of its own (short: a socket's path has a length limit) and the env that uses it."""

    def __init__(self, idle: float = 300, **env):
        self.folder = Path(tempfile.mkdtemp(prefix="netc-s-"))
        self.folder.chmod(0o700)
        self.env = {**os.environ, "NETC_SERVER": "1", "NETC_SERVER_DIR": str(self.folder),
                    "NETC_SERVER_IDLE": str(idle), **env}
        # the key as the client computes it (its interpreter path and sys.path, not pytest's)
        self.key = subprocess.run([sys.executable, "-c", "from netc.client import server_key; print(server_key())"],
                                  env=self.env, capture_output=True, text=True, check=True).stdout.strip()

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.key}.sock"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"

    def served(self) -> list[str]:
        """The commands the server ran, as its log names them ("netc validate x.yaml (in /folder)")."""
        return [command for _, command in self.children()]

    def children(self) -> list[tuple[int, str]]:
        """(pid, command) of each child, from the log's "<date> <time> <pid>: netc ..." lines."""
        lines = [line.split(" ", 2)[2] for line in self.log.read_text().splitlines() if ": netc " in line]
        return [(int(line.split(": ", 1)[0]), line.split(": ", 1)[1]) for line in lines]

    def start(self) -> None:
        """A first command runs here and starts the server; wait until it answers."""
        assert _netc(["validate", str(SPECS / "xor.yaml")], self.env).returncode == 0
        _wait(self.answers, what="the server to answer")

    def answers(self) -> bool:
        sock = client._connect(str(self.socket))
        if sock is None:
            return False
        sock.close()
        return True

    def pid(self) -> int:
        """The server's process, from its log's "server <pid> ready" line (-1 before that line)."""
        text = _read(self.log)
        return int(text.split("server ", 1)[1].split()[0]) if "server " in text else -1

    def stop(self) -> None:
        _netc(["server", "stop"], self.env)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def servers():
    servers = Servers()
    servers.start()
    yield servers
    servers.stop()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _server_processes(key: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"netc.server\0{key}".encode() in (proc / "cmdline").read_bytes() \
                    and _alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) counts as gone; the state follows "(name)"
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_served_command_prints_and_exits_as_a_local_one(servers, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC)
    for args in (["validate", str(SPECS / "xor.yaml"), str(SPECS / "lenet.yaml")], ["validate", str(bad)],
                 ["inspect", str(SPECS / "xor.yaml")], ["--version"], ["train", "--epochs", "x", "y.yaml"]):
        local = _netc(args, {**servers.env, "NETC_SERVER": "0"})
        served = _netc(args, servers.env)
        assert (served.returncode, served.stdout, served.stderr) == (local.returncode, local.stdout, local.stderr)
        assert servers.served()[-1].startswith("netc " + " ".join(args))
    assert _netc(["validate", str(bad)], servers.env).returncode == 1  # the exit code is the command's


def test_a_malformed_request_is_dropped_and_the_server_goes_on(servers):
    for request in ({"argv": "validate"}, {"argv": [1], "cwd": "/", "env": {}, "umask": 18}, ["x"]):
        sock = client._connect(str(servers.socket))
        client.send_message(sock, request, fds=(0, 1, 2))
        assert client.receive_message(sock) is None  # closed without an answer
        sock.close()
    assert _netc(["validate", str(SPECS / "xor.yaml")], servers.env).stdout == "1 spec: 1 valid, 0 invalid\n"
    assert servers.served()[-1].startswith("netc validate")


def test_the_command_runs_in_the_clients_folder_and_reads_its_stdin(servers, tmp_path):
    (tmp_path / "bad.yaml").write_text(BAD_SPEC)
    served = _netc(["validate", "bad.yaml"], servers.env, cwd=tmp_path)
    assert served.returncode == 1 and served.stderr.startswith("bad.yaml:6:36: error[E-UNKNOWN-KEY]")
    assert servers.served()[-1] == f"netc validate bad.yaml (in {tmp_path})"
    # a prompt answered on stdin: `cache clear`, told no, removes nothing (the cache is the tests' own)
    from netc.codecache import wanted_root

    (wanted_root() / "plans").mkdir(parents=True, exist_ok=True)  # something to ask about
    marker = wanted_root() / "plans" / f"served-prompt-{os.getpid()}.txt"  # a file that must survive the "no"
    marker.write_text("kept")
    before = set((wanted_root() / "plans").iterdir())
    answered = _netc(["cache", "clear"], servers.env, input="n\n")
    assert answered.returncode == 1 and "remove" in answered.stdout and "[y/N]" in answered.stdout
    assert servers.served()[-1].startswith("netc cache clear")
    # nothing removed (the other test worker may add plans to the shared cache meanwhile)
    assert marker in before and before <= set((wanted_root() / "plans").iterdir())
    marker.unlink()


def test_a_served_run_trains_the_same_weights_and_draws_its_curves_in_place(servers, tmp_path):
    runs = {}
    for how, env in (("local", {**servers.env, "NETC_SERVER": "0"}), ("served", servers.env)):
        runs[how] = tmp_path / how
        done = _netc(["train", str(SPECS / "xor.yaml"), "--epochs", "3", "--run-dir", str(runs[how]), "--quiet"], env,
                     cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("done: 3 epochs, loss ")
    assert servers.served()[-1].startswith(f"netc train {SPECS / 'xor.yaml'} --epochs 3")
    for name in ("last.safetensors", "last.state.safetensors"):
        assert (runs["local"] / name).read_bytes() == (runs["served"] / name).read_bytes(), name
    assert (runs["served"] / "curves.png").stat().st_size > 10_000  # drawn by the child: matplotlib is loaded


def _has_text(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _as_in_a_terminal(*ignored: int):
    """preexec_fn: Ctrl-C at its default, as a shell leaves it for a command (an ignored SIGINT is inherited
    across exec, and a client that ignores a signal has its command ignore it: `nohup`); the signals in
    `ignored` ignored."""
    def prepare() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)

    return prepare


def _start_training(servers, run_dir: Path, ignored: tuple[int, ...] = ()) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-m", "netc", "train", str(SPECS / "xor.yaml"), "--epochs", "1000000",
                                "--run-dir", str(run_dir), "--quiet"], env=servers.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal(*ignored))
    # metrics.jsonl is created empty before the loop takes over Ctrl-C: wait for the first epoch's line
    _wait(lambda: _has_text(run_dir / "metrics.jsonl") or process.poll() is not None, what="the first epoch")
    assert process.poll() is None, process.communicate()
    child, command = servers.children()[-1]
    assert f"--run-dir {run_dir}" in command
    return process, child


def test_ctrl_c_reaches_the_served_command(servers, tmp_path):
    process, child = _start_training(servers, tmp_path / "run")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted: saved" in err and "--resume" in err
    assert (tmp_path / "run" / "last.safetensors").exists()
    _wait(lambda: not _alive(child), what="the child to end")


def test_a_signal_the_client_ignores_is_ignored_by_the_command(servers, tmp_path):
    """`nohup netc train ...`: a hang-up reaches neither; Ctrl-C still does."""
    process, child = _start_training(servers, tmp_path / "run", ignored=(signal.SIGHUP,))
    process.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert process.poll() is None and _alive(child)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted: saved" in err


def test_ctrl_c_while_netc_starts_exits_without_a_traceback(tmp_path):
    """Ctrl-C while Python is still importing netc (before any command installed its handling)."""
    process = subprocess.Popen([sys.executable, "-m", "netc", "train", str(SPECS / "xor.yaml"), "--run-dir",
                                str(tmp_path / "run")], env={**os.environ, "NETC_SERVER": "0"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_as_in_a_terminal())
    _wait_for_library(process.pid, "pydantic_core")  # netc is importing: its spec models load pydantic
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def _wait_for_library(pid: int, name: str, timeout: float = 30.0) -> None:
    """Until the process has mapped a shared library whose path holds `name` (~0.1-0.17 s after the start
    for pydantic_core, the import of netc going on for longer). A fixed 0.3 s sleep overslept on a loaded CI
    machine, and the signal found netc training. Without /proc: 0.3 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                if name in maps.read():
                    return
        except OSError:
            time.sleep(0.3)
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} did not load {name} in {timeout} s")


def test_a_killed_client_ends_its_command(servers, tmp_path):
    process, child = _start_training(servers, tmp_path / "run")
    process.kill()
    process.wait(timeout=30)
    _wait(lambda: not _alive(child), timeout=30, what="the orphaned child to end")


def test_a_servers_life(tmp_path):
    """Status, a server killed and replaced, `netc server stop`, and a server that leaves when idle."""
    servers = Servers()
    try:
        servers.start()
        status = _netc(["server", "status"], servers.env)
        row = next(line for line in status.stdout.splitlines() if servers.key in line)
        assert str(servers.pid()) in row and "this netc" in row

        old = servers.pid()
        os.kill(old, signal.SIGKILL)
        _wait(lambda: not _alive(old), what="the server to die")
        assert servers.socket.exists()  # left behind: nothing answers on it
        # a training run here (its imports set KMP_DUPLICATE_LIB_OK, a variable of the key) starts the next
        done = _netc(["train", str(SPECS / "xor.yaml"), "--epochs", "1", "--run-dir", str(tmp_path / "run"), "-q"],
                     servers.env)
        assert done.returncode == 0 and done.stdout.startswith("done: 1 epoch")  # ran here
        _wait(lambda: servers.answers() and servers.pid() != old, what="a new server")
        assert servers.served() == []
        assert _netc(["validate", str(SPECS / "xor.yaml")], servers.env).returncode == 0
        assert len(servers.served()) == 1

        pid = servers.pid()
        stopped = _netc(["server", "stop"], servers.env)
        assert stopped.stdout == f"stopped 1 netc server in {servers.folder}\n"  # not counting itself
        _wait(lambda: not _alive(pid), what="the stopped server to leave")
        assert "no netc server is running" in _netc(["server", "status"], servers.env).stdout
        assert list(servers.folder.iterdir()) == []  # an orderly end leaves no file; `server` commands start none

        done = _netc(["validate", str(SPECS / "xor.yaml")], {**servers.env, "NETC_SERVER_IDLE": "2"})
        assert done.returncode == 0
        # it comes up, idles 2 s and leaves, taking its files (however slowly this machine runs it)
        _wait(lambda: "ready" in _read(servers.log) or not servers.log.exists(), what="a server that idles")
        _wait(lambda: list(servers.folder.iterdir()) == [], timeout=60, what="the idle server to leave")
        _wait(lambda: not _server_processes(servers.key), timeout=30, what="the idle server's process to end")
    finally:
        servers.stop()


@pytest.mark.parametrize("setting", [{"NETC_SERVER": "0"}, {"CI": "true"}])
def test_server_off_starts_none(tmp_path, setting):
    servers = Servers()
    try:
        env = {**{k: v for k, v in servers.env.items() if k != "NETC_SERVER"}, **setting}
        assert _netc(["validate", str(SPECS / "xor.yaml")], env).returncode == 0
        time.sleep(1)
        assert list(servers.folder.iterdir()) == []
    finally:
        servers.stop()


@pytest.mark.parametrize("problem", ["shared", "file", "long"])
def test_a_folder_that_is_not_the_users_alone_is_refused(tmp_path, problem):
    folder = tmp_path / "servers"
    if problem == "shared":
        folder.mkdir()
        folder.chmod(0o777)
        why = "can be written by other users"
    elif problem == "file":
        folder.write_text("not a folder")
        why = "File exists"
    else:
        folder = tmp_path / ("x" * 90)
        why = "too long for a socket"
    env = {**os.environ, "NETC_SERVER": "1", "NETC_SERVER_DIR": str(folder)}
    done = _netc(["validate", str(SPECS / "xor.yaml")], env)
    assert done.returncode == 0 and done.stdout == "1 spec: 1 valid, 0 invalid\n"  # run here all the same
    assert done.stderr.startswith("netc: warning: not using a netc server (") and why in done.stderr
    assert "NETC_SERVER_DIR" in done.stderr
    if problem != "file":
        time.sleep(1)
        assert not list(folder.glob("*.sock")) and not list(folder.glob("*.log"))


def test_the_key_follows_the_sources_and_the_settings_read_at_import(tmp_path, monkeypatch):
    base = {"HOME": "/home/x", "PATH": "/bin"}
    key = client.server_key(base)
    assert client.server_key({**base, "PATH": "/usr/bin", "NETC_SERVER_IDLE": "5", "NETC_SERVER_KEY": "k"}) == key
    for name in ("NUMBA_OPT", "NETC_CACHE_DIR", "OMP_WAIT_POLICY", "OPENBLAS_CORETYPE", "LANG", "PYTHONPATH"):
        assert client.server_key({**base, name: "1"}) != key, name
    package = tmp_path / "netc"
    shutil.copytree(Path(client.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(client, "__file__", str(package / "client.py"))
    copied = client.server_key(base)
    assert copied != key  # another install of netc
    assert client.server_key(base) == copied
    cores = os.sched_getaffinity(0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores ^ {max(cores) + 1})  # `taskset -c ...`
    pinned = client.server_key(base)
    assert pinned != copied
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    monkeypatch.setattr(os, "getpriority", lambda which, who: niceness + 5)  # `nice -n 5 netc ...`
    assert client.server_key(base) != pinned
    source = package / "kernels" / "dense.py"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 1_000_000))
    assert client.server_key(base) != copied  # an edited kernel: a new server


def test_a_server_that_cannot_load_netc_is_not_started_again(tmp_path):
    servers = Servers(MPLBACKEND="bogus")  # matplotlib refuses it on import: the server's preload fails
    try:
        done = _netc(["validate", str(SPECS / "xor.yaml")], servers.env)  # needs no matplotlib: runs here
        assert done.returncode == 0 and done.stdout == "1 spec: 1 valid, 0 invalid\n"
        failed = servers.folder / f"{servers.key}.failed"
        _wait(failed.exists, what="the failed server's note")
        _wait(lambda: "Traceback" in servers.log.read_text() and "bogus" in servers.log.read_text(),
              what="the server's traceback in its log")
        assert "bogus" in failed.read_text()
        log = servers.log.read_text()
        assert _netc(["validate", str(SPECS / "xor.yaml")], servers.env).returncode == 0
        time.sleep(1)
        assert servers.log.read_text() == log and not servers.socket.exists()  # no second try
        old = time.time() - client.RETRY - 1  # an hour later, another try (it fails the same way)
        os.utime(failed, (old, old))
        assert _netc(["validate", str(SPECS / "xor.yaml")], servers.env).returncode == 0
        _wait(lambda: failed.stat().st_mtime > old + 10, what="the second try")
    finally:
        servers.stop()


def test_a_server_whose_cache_folder_is_unusable_serves_nothing(tmp_path):
    """Its commands must print the cache warning themselves: each runs in a process of its own."""
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    servers = Servers(NETC_CACHE_DIR=str(blocked))
    try:
        for attempt in range(2):
            done = _netc(["train", str(SPECS / "xor.yaml"), "--epochs", "1", "--run-dir", str(tmp_path / f"r{attempt}"),
                          "-q"], servers.env)
            assert done.returncode == 0, done.stderr
            assert done.stderr.startswith(f"netc: warning: the cache folder {blocked} is not usable")
            failed = servers.folder / f"{servers.key}.failed"
            _wait(failed.exists, what="the server's note")
        assert failed.read_text() == f"not serving: the cache folder {blocked} is not usable"
        assert servers.served() == [] and not servers.socket.exists()
    finally:
        servers.stop()


@pytest.mark.parametrize("answer", ["nothing", "pid only"])
def test_a_server_that_goes_away(tmp_path, answer):
    """A server that closes before it forked (it was leaving as the client came): the command runs in
    the client instead; one that closes after forking, without the child's status: a clear error."""
    servers = Servers()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(servers.socket))
    listener.listen(1)

    def serve_badly():
        conn, _ = listener.accept()
        message, fds = client.receive_message(conn, with_fds=True)
        for fd in fds:
            os.close(fd)
        if answer == "pid only":
            client.send_message(conn, {"pid": os.getpid() + 10_000_000})  # no such process
        conn.close()

    thread = threading.Thread(target=serve_badly, daemon=True)
    thread.start()
    try:
        done = _netc(["validate", str(SPECS / "xor.yaml")], {**servers.env, "NETC_SERVER_IDLE": "2"})
        thread.join(10)
        if answer == "nothing":
            assert done.returncode == 0 and done.stdout == "1 spec: 1 valid, 0 invalid\n" and done.stderr == ""
        else:
            assert done.returncode == 1 and done.stdout == ""
            assert done.stderr == ("netc: the netc server ended before the command did (NETC_SERVER=0 runs "
                                   "commands without it)\n")
    finally:
        listener.close()
        servers.stop()


def test_servers_only_where_they_can_run(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("NETC_SERVER", "1")
    assert client.servers_wanted()
    for platform in ("darwin", "win32"):
        monkeypatch.setattr(sys, "platform", platform)
        assert not client.servers_wanted(), platform


def test_server_commands_name_an_unusable_folder(tmp_path):
    folder = tmp_path / "servers"
    folder.write_text("not a folder")
    env = {**os.environ, "NETC_SERVER": "0", "NETC_SERVER_DIR": str(folder)}
    for command in ("status", "stop"):
        done = _netc(["server", command], env)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"NETC_SERVER_DIR: error[E-SERVER]: the netc server folder is not usable: "
                                      f"{folder}: File exists\n  hint: set NETC_SERVER_DIR to a folder of yours alone")
    fresh = tmp_path / "fresh"
    off = _netc(["server", "status"], {**env, "NETC_SERVER_DIR": str(fresh)})
    assert off.stdout == f"no netc server is running in {fresh} (servers: off (NETC_SERVER=0, or a CI job))\n"

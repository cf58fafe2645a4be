"""The CI entry points for users: the pre-commit hook (.pre-commit-hooks.yaml) and the
GitHub Action (action.yml), plus the snippets in docs/ci-validation.md.

`test_hook_fails_then_passes` runs the hook twice through `pre-commit run`, as a user's commits
would: the first run installs netc and its dependencies (NumPy, Numba, SciPy, ...) from the
package index into pre-commit's store (45-70 s on 2 cores with a local index), the second reuses
that environment. It skips when git or pre-commit is missing. The
other tests only read files or run `netc validate`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
ACTION = ROOT / "action.yml"
DOCS = ROOT / "docs" / "ci-validation.md"
HOOK_ID = "netc-validate"

GOOD = """\
netc: 1
name: good
inputs:
  x: {shape: [2]}
  label: {shape: [], dtype: int64, classes: 2}
layers:
  - {name: hidden, op: linear, out: 8}
  - {name: act, op: tanh}
  - {name: out, op: linear, out: 2}
loss: {op: cross_entropy, input: out, target: label}
"""
BROKEN = GOOD.replace("op: tanh", "op: tahn")
# YAML outside specs/ that is not a spec: the hook must leave it alone (netc would reject it)
NOT_A_SPEC = """\
apiVersion: v1
kind: Service
metadata: {name: web}
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def position(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first `needle` in `text`."""
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def clean_env() -> dict[str, str]:
    """This environment without GIT_* (set when pytest runs inside a git hook) and without colors."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.pop("FORCE_COLOR", None)
    env.update(NO_COLOR="1", TERM="dumb")
    return env


def git(cwd: Path, *args: str) -> str:
    identity = ("-c", "user.name=netc tests", "-c", "user.email=tests@netc.invalid", "-c", "commit.gpgsign=false")
    done = subprocess.run(["git", *identity, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          check=True)
    return done.stdout


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- pre-commit hook


def test_manifest_is_valid_for_pre_commit():
    clientlib = pytest.importorskip("pre_commit.clientlib", reason="pre-commit is not installed")
    hooks = {hook["id"]: hook for hook in clientlib.load_manifest(str(MANIFEST))}  # raises when invalid
    hook = hooks[HOOK_ID]
    assert hook["entry"].split()[:2] == ["netc", "validate"]
    assert hook["language"] == "python"
    assert hook["pass_filenames"] and hook["require_serial"]
    assert hook["types"] == ["yaml"]
    assert "--only-specs" in hook["entry"].split(), "other YAML is offered too: netc must recognise specs"


@pytest.fixture(scope="module")
def netc_repo(tmp_path_factory) -> Path:
    """This repository's working tree (tracked and new files, not ignored ones) committed to a fresh repo.

    The hook is installed from a commit, so uncommitted changes must be committed somewhere: a new
    file, .pre-commit-hooks.yaml until it is committed, would be missing from HEAD. In CI, on a
    clean clone, the copy equals HEAD.
    """
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout of netc")
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    repo = tmp_path_factory.mktemp("netc-repo")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out, as in the tree
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "netc working tree")
    return repo


def commit_hook(netc_repo: Path, user_repo: Path, home: Path) -> subprocess.CompletedProcess:
    """`pre-commit run --all-files` in a user's repository whose .pre-commit-config.yaml names netc's
    hook at a commit, as the README shows (a local clone stands in for github.com/netc). The first
    run installs netc into pre-commit's store `home`; later runs reuse it, as on a user's machine."""
    rev = git(netc_repo, "rev-parse", "HEAD").strip()
    config = {"repos": [{"repo": str(netc_repo), "rev": rev, "hooks": [{"id": HOOK_ID}]}]}
    (user_repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = clean_env()
    env["PRE_COMMIT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", HOOK_ID, "--all-files", "--verbose", "--color", "never"],
        cwd=user_repo, env=env, capture_output=True, text=True, timeout=900,
    )


def test_hook_fails_then_passes(netc_repo, tmp_path):
    pytest.importorskip("pre_commit", reason="pre-commit is not installed")
    user_repo = tmp_path / "user"
    user_repo.mkdir()
    write(user_repo, {"specs/good.yaml": GOOD, "specs/broken.yaml": BROKEN, "deploy/service.yaml": NOT_A_SPEC})
    git(user_repo, "init", "-q")
    git(user_repo, "add", "-A")  # --all-files runs on what git tracks, staged included

    home = tmp_path / "pre-commit-home"
    failed = commit_hook(netc_repo, user_repo, home)
    out = ANSI.sub("", failed.stdout + failed.stderr)
    line, col = position(BROKEN, "tahn")
    assert failed.returncode == 1, out
    assert f"specs/broken.yaml:{line}:{col}: error[E-UNKNOWN-OP]: unknown op 'tahn'" in out
    # deploy/service.yaml is offered too, and skipped: it has no `netc:` key
    assert "2 specs: 1 valid, 1 invalid (1 error); 1 YAML file without 'netc:' skipped" in out
    assert "service.yaml" not in out
    assert "Installing environment" in out  # pre-commit's own line as it installs the hook

    write(user_repo, {"specs/broken.yaml": GOOD.replace("name: good", "name: fixed")})
    git(user_repo, "add", "-A")
    passed = commit_hook(netc_repo, user_repo, home)
    out = ANSI.sub("", passed.stdout + passed.stderr)
    assert passed.returncode == 0, out
    assert re.search(r"netc validate\.+Passed", out), out
    assert "2 specs: 2 valid, 0 invalid" in out
    assert "Installing environment" not in out, "the second commit reuses the hook's environment"


# --------------------------------------------------------------------------- GitHub Action


def load_action() -> dict:
    with ACTION.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def validate_step(action: dict) -> dict:
    (step,) = [step for step in action["runs"]["steps"] if "netc validate" in step.get("run", "")]
    return step


def test_action_is_a_composite_that_validates():
    action = load_action()
    assert action["name"] and action["description"]
    assert set(action["inputs"]) == {"paths", "python-version", "netc-version"}
    for name, spec in action["inputs"].items():
        assert spec["description"] and "default" in spec, name
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    assert steps[0]["uses"].startswith("actions/setup-python@")
    for step in steps:
        if "run" in step:
            assert step["shell"] == "bash"  # composite run steps must name their shell
            assert "${{" not in step["run"], "inputs reach scripts through env, never spliced in"
    assert "netc validate --format github" in validate_step(action)["run"]


def test_action_validate_step_annotates_errors(tmp_path):
    """Run the action's validate script as GitHub runs a bash step, with this environment's netc."""
    bash = shutil.which("bash")
    scripts = Path(sysconfig.get_path("scripts"))
    if bash is None or not (scripts / "netc").exists():
        pytest.skip("needs bash and the netc script")
    write(tmp_path, {"specs/good.yaml": GOOD, "specs/broken.yaml": BROKEN, "deploy/service.yaml": NOT_A_SPEC})
    env = clean_env()
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    env["NETC_PATHS"] = "specs/*.yaml\nspecs/good.yaml"  # a glob for netc (not the shell) and a file
    script = validate_step(load_action())["run"]
    done = subprocess.run([bash, "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    line, col = position(BROKEN, "tahn")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"::error file=specs/broken.yaml,line={line},col={col},title=E-UNKNOWN-OP::" in done.stdout
    assert "2 specs: 1 valid, 1 invalid (1 error)" in done.stdout


def test_action_scripts_parse():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    for step in load_action()["runs"]["steps"]:
        if "run" in step:
            done = subprocess.run([bash, "-n", "-c", step["run"]], capture_output=True, text=True)
            assert done.returncode == 0, (step.get("name"), done.stderr)


# --------------------------------------------------------------------------- the documented snippets


def yaml_blocks(markdown: str) -> list:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", markdown, re.DOTALL)]


def test_docs_snippets_match_hook_and_action(tmp_path):
    clientlib = pytest.importorskip("pre_commit.clientlib", reason="pre-commit is not installed")
    blocks = yaml_blocks(DOCS.read_text(encoding="utf-8"))
    (config,) = [block for block in blocks if "repos" in block]
    config_file = tmp_path / ".pre-commit-config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    hooks = clientlib.load_config(str(config_file))["repos"][0]["hooks"]  # raises when invalid
    assert [hook["id"] for hook in hooks] == [HOOK_ID]

    (workflow,) = [block for block in blocks if "jobs" in block]
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    (uses,) = [step for step in steps if re.fullmatch(r"[^/]+/netc@\S+", step.get("uses", ""))]
    assert set(uses.get("with", {})) <= set(load_action()["inputs"])
    assert steps.index(uses) > 0 and steps[0]["uses"].startswith("actions/checkout@")

"""The docs run: every `python` and `console` block of README.md and docs/*.md is executed and
its output compared with what the page shows.

- ```python: run as a script in the page's work folder; it must exit 0.
- ```console: a line starting with `$ ` is a command (bash; a line ending in `\\` continues on the
  next), the lines up to the next `$ ` are its output as shown. stdout and stderr are read together
  and compared line by line, trailing spaces ignored, after `normalize`: timing figures (`0.04 s`,
  `33,330 samples/s`, dates), whether the plan was compiled or loaded from the cache (that depends
  on the cache, not on netc) and the user id in the fallback cache's name are masked (MASKS);
  everything else must match exactly. A line `...` in the shown output stands for any number of
  lines.
- ```yaml after `<!-- docs-test: same-as: PATH -->`: the same YAML data as that file.
- ```text after `<!-- docs-test: excerpt-of: PAGE -->`: lines of that page's (checked) blocks, in order:
  a page quotes another's output without running it twice.

Each page runs in its own temporary work folder holding copies of specs/ and examples/, its
blocks in order (a later block may use an earlier one's run folder); `netc` is the script next
to this interpreter (or `python -m netc`), its commands served by a netc server of the pages' own
(netc.server), output is a pipe (no terminal), COLUMNS=200, and `/tmp/viz-run` (docs/pictures.md)
becomes a folder of the work folder. The repository stays clean. The compile caches are the user's
(NETC_CACHE_DIR or ~/.cache/netc): warm, the whole file takes 45-70 s on 2 cores on a quiet day
(2 min 48 s on a day the VM ran 2.8x slower, 3 min 57 s there with a fresh process per command);
from empty caches every plan it uses compiles once (a CNN ~25 s).

A block that is not run says so on the line before it:

- `<!-- docs-test: skip: REASON -->`: never run. Every such block is listed in SKIPPED below with
  its reason, so skipping a block is a change to this file too, not a silent one.
- `<!-- docs-test: needs: MODULE, ... -->`: run where those modules import, skipped elsewhere
  (the ONNX blocks: `pip install -e ".[onnx]"`).

A `console` block without any `$ ` command is a transcript of another program (pre-commit's
output in docs/ci-validation.md): listed in TRANSCRIPTS with where it is tested instead.

Training figures: the same seed gives the same numbers on the same machine. The pages show a
2-core machine's; NUMBA_NUM_THREADS is set to 2 (at most the cores there are) because a conv pass
splits the batch into two chunks per core and the chunk count fixes the order of the weight-gradient
sums (`netc.compiler.steps.parallel_chunks`). The CPU's instruction set changes the last bits too
(OpenBLAS picks its GEMM kernels by CPU, numpy its SIMD loops), and a training run amplifies one bit
into another epoch count: CI on an AVX-512 machine printed other figures than the pages showed.
So the pages run with the libraries' AVX2 code (REFERENCE_CPU): OpenBLAS's Haswell kernels and no
AVX-512 loops of numpy's, on any machine that has AVX2. Numba's code needs no such setting: with
fastmath `nsz` only (netc/jit.py) it rounds the same for every target CPU (the pages printed the
same figures compiled for this AVX-512 host as for x86-64-v3).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REFERENCE_CPU

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COPIED = ("specs", "examples")  # what a page's work folder holds (copies)
TIMEOUT = 600  # seconds for one block (a cold CNN compile is ~25 s on 2 cores)

# (page, reason) of every block with a skip marker, in page order
SKIPPED = [
    ("README.md", "creates a virtual environment and installs from the package index; "
                  "the training it ends with is the digits-cnn block under Training"),
    ("README.md", "the test suite itself"),
    ("docs/cli-spec.md", "outputs not shown (long); tests/test_cli_spec.py checks every format, "
                         "and `dot` (Graphviz) may be missing"),
    ("docs/sequences.md", "trains for about 40 s; tests/test_text.py trains a smaller model on a periodic text and "
                          "samples it"),
    ("docs/sequences.md", "trains for about 25 s; tests/test_sequence_loss.py checks the loss at every step against "
                          "PyTorch and the text source's shifted targets"),
    ("docs/tensorboard.md", "starts a web server (http://localhost:6006) that runs until Ctrl-C"),
]
# (page, where what it shows is tested) of every console block without a command, in page order
TRANSCRIPTS = [
    ("docs/ci-validation.md", "pre-commit's output; tests/test_precommit.py::test_hook_fails_then_passes "
                              "runs the hook"),
]
# paths in the pages that stand for a folder of the work folder
PLACES = {"/tmp/viz-run": "viz-run"}
# pictures in docs/img and the file the documented commands write (relative to the work folder)
PICTURES = {"docs/img/filters.png": "filters.png", "docs/img/curves.png": "viz-run/curves.png",
            **{f"docs/img/{name}.png": f"{name}.png" for name in (
                "reconstruct-conv1", "reconstruct-conv2", "occlusion", "saliency", "seed-conv1", "seed-conv2",
                "seed-saliency")}}

MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[^`\s]*)[^`]*$")
SEPARATOR = "\x1fdocs-test-command\x1f"


@dataclass
class Block:
    page: str  # relative to the repository, e.g. "docs/pictures.md"
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list[str]
    marker: tuple[str, str] | None = None  # (kind, value) of the comment before the block

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the docs-test marker of each."""
    blocks, lines = [], page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        found = MARKER.match(before)
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0])):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        blocks.append(Block(page.relative_to(ROOT).as_posix(), i + 1, opening["lang"].lower(), body,
                            (found["kind"], found["value"]) if found else None))
        i = j + 1
    return blocks


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) of a console block."""
    out: list[tuple[str, list[str]]] = []
    continuing = False
    for line in block.lines:
        if continuing:
            command, shown = out[-1]
            out[-1] = (command + "\n" + line, shown)
            continuing = line.endswith("\\")
        elif line.startswith("$ "):
            out.append((line[2:], []))
            continuing = line.endswith("\\")
        elif out:
            out[-1][1].append(line)
    return out


MASKS = [
    (re.compile(r"\d+(?:\.\d+)? (s|ms)\b"), r"<t> \1"),
    (re.compile(r"\d[\d,]* samples/s"), "<n> samples/s"),
    (re.compile(r"plan (?:compiled|loaded from the cache|started on the Python tier) in"),
     "plan compiled or loaded from the cache in"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?"), "<date>"),
    (re.compile(r"/netc-cache-\d+\b"), "/netc-cache-<uid>"),  # the fallback cache of a user (codecache)
]


# cache state, not a result: printed by the first run on a machine whose kernel cache lacks a kernel
# the spec needs, which depends on what ran before it (a page shown alone, or after others)
KERNEL_COMPILE_LINE = re.compile(r"compiling netc's kernels for this machine \(once\): .*")


def normalize(text: str) -> list[str]:
    """Lines without trailing spaces or trailing blank lines, timing figures masked, and without the
    line that says kernels are being compiled for this machine."""
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    lines = [line.rstrip() for line in text.splitlines() if not KERNEL_COMPILE_LINE.fullmatch(line.rstrip())]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(shown: list[str], actual: list[str]) -> bool:
    """`actual` is `shown`, where a line `...` of `shown` stands for any number of lines."""
    pattern = "".join(r"(?:[^\n]*\n)*?" if line == "..." else re.escape(line + "\n") for line in shown)
    return re.fullmatch(pattern, "".join(line + "\n" for line in actual)) is not None


def not_run(block: Block) -> str | None:
    """Why a python/console block is not run here (None: it runs)."""
    if block.marker and block.marker[0] == "skip":
        return f"skip: {block.marker[1]}"
    if block.marker and block.marker[0] == "needs":
        missing = [name for name in re.split(r"[,\s]+", block.marker[1]) if name and find_spec(name) is None]
        if missing:
            return f"needs {', '.join(missing)} (not installed here)"
    if block.lang == "console" and not commands(block):
        where = dict(TRANSCRIPTS).get(block.page, "not listed in TRANSCRIPTS")
        return f"transcript of another program: {where}"
    return None


BLOCKS = [block for page in PAGES for block in parse(page)]
RUNNABLE = [block for block in BLOCKS if block.lang in ("python", "console")]


def netc_command() -> str:
    """How bash calls this interpreter's netc (the client: a netc server runs the command when one is up)."""
    script = Path(sys.executable).with_name("netc")
    if script.is_file() and os.access(script, os.X_OK):
        return f'netc() {{ "{script}" "$@"; }}'
    return f'netc() {{ "{sys.executable}" -m netc "$@"; }}'




SERVER: dict[str, str] = {}  # while the pages run: the netc server settings of their commands (`pages`)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONIOENCODING="utf-8",
               NUMBA_NUM_THREADS=str(min(2, os.cpu_count() or 1)), **REFERENCE_CPU, **SERVER)
    return env


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None


class Page:
    """One page's blocks run in order in one work folder."""

    def __init__(self, page: str, work: Path):
        self.work = work
        for name in COPIED:
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        self.outcomes = {block.id: self.run(block) for block in RUNNABLE if block.page == page}

    def place(self, text: str) -> str:
        for shown, local in PLACES.items():
            text = text.replace(shown, str(self.work / local))
        return text

    def unplace(self, text: str) -> str:
        for shown, local in PLACES.items():
            text = text.replace(str(self.work / local), shown)
        return text

    def run(self, block: Block) -> Outcome:
        why = not_run(block)
        if why:
            return Outcome(skipped=why)
        if block.lang == "python":
            return self.run_python(block)
        return self.run_console(block)

    def run_python(self, block: Block) -> Outcome:
        script = self.work / f"docs_block_{block.line}.py"
        script.write_text("\n".join(block.lines) + "\n", encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, script.name], cwd=self.work, env=environment(),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return Outcome([f"{block.id}: did not finish in {TIMEOUT} s"])
        if done.returncode != 0:
            return Outcome([f"{block.id}: exit {done.returncode}\n{done.stdout}{done.stderr}"])
        return Outcome()

    def run_console(self, block: Block) -> Outcome:
        steps = commands(block)
        script = [netc_command(), f"cd {self.work}"]
        for command, _ in steps:
            # print a separator, then restore $? so that `echo $?` reports the previous command
            script += [f"__status=$?; printf '\\n{SEPARATOR}\\n'; ( exit $__status )", self.place(command)]
        try:
            done = subprocess.run(["bash", "--noprofile", "--norc", "-c", "\n".join(script)], cwd=self.work,
                                  env=environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return Outcome([f"{block.id}: did not finish in {TIMEOUT} s"])
        outputs = done.stdout.split(f"\n{SEPARATOR}\n")[1:]
        problems = []
        for (command, shown), output in zip(steps, outputs):
            expected, actual = normalize("\n".join(shown)), normalize(self.unplace(output))
            if not matches(expected, actual):
                diff = "\n".join(difflib.unified_diff(expected, actual, "shown", "printed", lineterm=""))
                problems.append(f"{block.id}: $ {command}\n{diff}")
        if len(outputs) != len(steps):
            problems.append(f"{block.id}: {len(steps)} commands, {len(outputs)} outputs:\n{done.stdout}")
        return Outcome(problems)


@pytest.fixture(scope="module")
def pages():
    """page -> Page, each run once, on first use. The pages' `netc` commands go through a netc server
    of their own, as in a user's shell (the first starts it): each starts with a fork instead of a
    fresh process (~70 commands; a served command prints what a local one does: tests/test_server.py)."""
    done: dict[str, Page] = {}
    folders: list[str] = [tempfile.mkdtemp(prefix="netc-docs-servers-")]
    SERVER.update(NETC_SERVER="1", NETC_SERVER_DIR=folders[0], NETC_SERVER_IDLE="300")

    def get(page: str) -> Page:
        if page not in done:
            folders.append(tempfile.mkdtemp(prefix="netc-docs-"))
            done[page] = Page(page, Path(folders[-1]))
        return done[page]

    yield get
    subprocess.run([sys.executable, "-m", "netc", "server", "stop"], env=environment(), capture_output=True,
                   timeout=60)
    SERVER.clear()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.compiled
@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: f"{block.id}-{block.lang}")
def test_block_runs_as_shown(block, pages):
    outcome = pages(block.page).outcomes[block.id]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    if outcome.problems:
        pytest.fail("\n\n".join(outcome.problems), pytrace=False)


def test_every_block_not_run_is_listed_with_its_reason():
    assert [(b.page, b.marker[1]) for b in RUNNABLE if b.marker and b.marker[0] == "skip"] == SKIPPED
    transcripts = [b.page for b in RUNNABLE if b.lang == "console" and not commands(b)]
    assert transcripts == [page for page, _ in TRANSCRIPTS]
    for block in BLOCKS:  # a misspelt marker would run or skip a block the wrong way
        assert block.marker is None or block.marker[0] in ("skip", "needs", "same-as", "excerpt-of"), block.id
        assert block.marker is None or block.marker[0] != "same-as" or block.lang == "yaml", block.id
        assert block.marker is None or block.marker[0] != "excerpt-of" or block.lang == "text", block.id


def test_the_pages_run_on_the_libraries_avx2_code():
    """In the pages' environment OpenBLAS runs its Haswell kernels and numpy none of its AVX-512
    loops, whatever this machine has."""
    wide = REFERENCE_CPU["NPY_DISABLE_CPU_FEATURES"].split()
    probe = ("import json, numpy, scipy.linalg, threadpoolctl\n"
             "try:\n    from numpy._core._multiarray_umath import __cpu_features__\n"
             "except ImportError:\n    from numpy.core._multiarray_umath import __cpu_features__\n"
             "blas = [i.get('architecture') for i in threadpoolctl.threadpool_info()\n"
             "        if i['internal_api'] == 'openblas']\n"
             f"print(json.dumps([blas, [f for f in {wide!r} if __cpu_features__.get(f)]]))\n")
    done = subprocess.run([sys.executable, "-c", probe], env=environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    blas, numpy_wide = json.loads(done.stdout.splitlines()[-1])
    assert blas and set(blas) == {"Haswell"}, blas
    assert numpy_wide == [], f"numpy still runs {numpy_wide} loops"


def test_masks_hide_timing_and_cache_state_but_not_results():
    shown = ["plan compiled in 24.1 s", "...", "epoch  15  loss 0.0391  acc 98.96%  (0.04 s, 33,345 samples/s)"]
    printed = ("plan loaded from the cache in 0.4 s\nepoch   1\n"
               "epoch  15  loss 0.0391  acc 98.96%  (1.20 s, 998 samples/s)  \n\n")
    assert matches(normalize("\n".join(shown)), normalize(printed))
    assert not matches(normalize("\n".join(shown)), normalize(printed.replace("0.0391", "0.0392")))
    assert not matches(normalize("a\nb"), normalize("a\nb\nc")) and matches(normalize("a\n...\nc"), normalize("a\nc"))
    compiled_first = printed.replace("plan", "compiling netc's kernels for this machine (once): 1 in 1 process\nplan")
    assert matches(normalize("\n".join(shown)), normalize(compiled_first))  # the kernel cache's state
    assert not matches(normalize("a\nb"), normalize("a\ncompiling netc's kernels, and more\nb"))


def test_the_pages_have_blocks_to_run():
    ran = [b for b in RUNNABLE if not_run(b) is None]
    assert {b.lang for b in ran} == {"python", "console"}
    assert {b.page for b in ran} >= {"README.md", "docs/cli-spec.md", "docs/pictures.md"}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker and b.marker[0] == "same-as"], ids=lambda b: b.id)
def test_yaml_quoted_from_a_file_is_that_file(block):
    quoted = yaml.safe_load("\n".join(block.lines))
    assert quoted == yaml.safe_load((ROOT / block.marker[1]).read_text(encoding="utf-8"))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker and b.marker[0] == "excerpt-of"], ids=lambda b: b.id)
def test_an_excerpt_quotes_the_lines_of_the_page_it_names(block):
    source = [line.rstrip() for b in BLOCKS if b.page == block.marker[1] for line in b.lines]
    at = 0
    for line in block.lines:
        assert line.rstrip() in source[at:], f"{block.id}: {line!r} is not in {block.marker[1]} (after line {at})"
        at = source.index(line.rstrip(), at) + 1


def test_readme_ci_snippets_match_the_hook_and_the_action():
    readme = [yaml.safe_load("\n".join(b.lines)) for b in BLOCKS if b.page == "README.md" and b.lang == "yaml"]
    guide = [yaml.safe_load("\n".join(b.lines)) for b in BLOCKS
             if b.page == "docs/ci-validation.md" and b.lang == "yaml"]
    hooks = {hook["id"] for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
    inputs = set(yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))["inputs"])

    (config,) = [doc for doc in readme if isinstance(doc, dict) and "repos" in doc]
    (guide_config,) = [doc for doc in guide if isinstance(doc, dict) and "repos" in doc]
    (repo,) = config["repos"]
    assert repo["rev"] == guide_config["repos"][0]["rev"] and repo["repo"] == guide_config["repos"][0]["repo"]
    assert {hook["id"] for hook in repo["hooks"]} <= hooks

    (steps,) = [doc for doc in readme if isinstance(doc, list)]
    (step,) = [s for s in steps if re.fullmatch(r"[^/]+/netc@\S+", s.get("uses", ""))]
    guide_steps = [s for doc in guide if isinstance(doc, dict) and "jobs" in doc
                   for job in doc["jobs"].values() for s in job["steps"]]
    assert step["uses"] in [s.get("uses") for s in guide_steps]
    assert set(step.get("with", {})) <= inputs


@pytest.mark.compiled
@pytest.mark.parametrize("picture", sorted(PICTURES))
def test_pictures_are_what_the_documented_commands_draw(picture, pages):
    """docs/img is what docs/pictures.md's commands draw today: same size, and per pixel the same
    up to anti-aliasing (a mean gray difference under 0.2 of 255; a stale filters.png, whose
    weights and title had changed, was 0.9 off)."""
    from matplotlib.image import imread

    page = pages("docs/pictures.md")
    assert not any(o.problems for o in page.outcomes.values()), "the commands of docs/pictures.md failed"
    drawn = page.work / PICTURES[picture]
    assert drawn.is_file(), f"the documented commands did not write {PICTURES[picture]}"
    shown, made = imread(ROOT / picture), imread(drawn)
    assert shown.shape == made.shape, f"{picture}: {shown.shape[:2]} px (height, width), drawn {made.shape[:2]}"
    off = float(np.abs(shown[..., :3].mean(axis=-1) - made[..., :3].mean(axis=-1)).mean() * 255)
    assert off < 0.2, f"{picture} is not what the commands draw (mean gray difference {off:.2f}/255): " \
                      "regenerate it with the commands of docs/pictures.md"

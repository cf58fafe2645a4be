"""Training runs end to end: accuracy targets, run folders, resume, init, divergence, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from netc.errors import DataError, RunError
from netc.spec import load_spec, load_spec_text
from netc.runtime.train import Overrides, Trainer

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
pytestmark = pytest.mark.compiled


def train(spec: Path | str, tmp_path: Path, **kwargs):
    loaded = load_spec(spec) if isinstance(spec, Path) else spec
    trainer = Trainer(loaded, runs_root=tmp_path / "runs", **kwargs)
    return trainer, trainer.run()


def test_xor_reaches_100_percent(tmp_path):
    _, result = train(SPECS / "xor.yaml", tmp_path)
    assert result.epochs[-1].train_accuracy == 1.0
    assert result.epochs[-1].eval_accuracy == 1.0


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_digits_reach_97_percent_on_the_held_out_split(tmp_path, name):
    _, result = train(SPECS / f"{name}.yaml", tmp_path)
    assert result.epochs[-1].eval_accuracy >= 0.97, result.epochs[-1]


def test_run_folder_holds_spec_metrics_and_a_torch_style_checkpoint(tmp_path):
    trainer, result = train(SPECS / "digits-cnn.yaml", tmp_path, overrides=Overrides(epochs=2, seed=3))
    run = result.run_dir
    assert run == tmp_path / "runs" / "digits_cnn"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "samples_per_second"} <= set(lines[0])
    assert "epochs: 2" in (run / "spec.yaml").read_text() and "seed: 3" in (run / "spec.yaml").read_text()
    weights = load_file(str(run / "last.safetensors"))
    assert weights["conv1.weight"].shape == (16, 1, 3, 3)
    assert weights["fc1.weight"].shape == (64, 128)
    np.testing.assert_array_equal(weights["fc2.bias"], trainer.model.get_weights()["fc2.bias"])
    # a second run of the same spec gets its own numbered folder
    _, second = train(SPECS / "digits-cnn.yaml", tmp_path, overrides=Overrides(epochs=1))
    assert second.run_dir == tmp_path / "runs" / "digits_cnn-2"


def _final_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "last.safetensors"))


def _start_training(tmp_path: Path, run_dir: Path, epochs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "netc.cli", "train", str(SPECS / "digits-cnn.yaml"), "--epochs", str(epochs),
           "--run-dir", str(run_dir), "--quiet"]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(run_dir: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.005)
    raise AssertionError(f"training did not reach {count} epochs: {process.poll()} {process.stderr.read()}")


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_resume_after_the_process_dies_matches_an_unbroken_run(tmp_path, how):
    epochs = 40
    unbroken, result = train(SPECS / "digits-cnn.yaml", tmp_path, overrides=Overrides(epochs=epochs))
    expected = _final_weights(result.run_dir)

    run_dir = tmp_path / "broken"
    process = _start_training(tmp_path, run_dir, epochs)
    _wait_for_epochs(run_dir, 3, process)
    process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    _, err = process.communicate(timeout=60)
    done = len((run_dir / "metrics.jsonl").read_text().splitlines())
    assert done < epochs, "the run finished before it could be stopped"
    if how == "interrupt":
        assert process.returncode == 130
        assert "--resume" in err  # tells the user how to continue

    trainer = Trainer(load_spec(SPECS / "digits-cnn.yaml"), Overrides(epochs=epochs), run_dir=run_dir, resume=True)
    resumed = trainer.run()
    assert resumed.start_epoch >= 2  # 3 epochs logged: at least 2 checkpointed (the kill may fall between)
    logged = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, epochs + 1))  # one line per epoch, as in an unbroken run
    got = _final_weights(run_dir)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_resume_refuses_a_changed_spec_and_a_missing_run(tmp_path):
    train(SPECS / "xor.yaml", tmp_path, overrides=Overrides(epochs=2))
    with pytest.raises(RunError, match="changed since this run started"):
        Trainer(load_spec(SPECS / "xor.yaml"), Overrides(epochs=3, lr=0.5), runs_root=tmp_path / "runs",
                resume=True).run()
    with pytest.raises(RunError, match="nothing to resume"):
        Trainer(load_spec(SPECS / "digits-mlp.yaml"), runs_root=tmp_path / "runs", resume=True)
    # only --epochs may change: training longer continues the run
    trainer = Trainer(load_spec(SPECS / "xor.yaml"), Overrides(epochs=3), runs_root=tmp_path / "runs", resume=True)
    result = trainer.run()
    assert result.start_epoch == 2 and [r.epoch for r in result.epochs] == [3]


def test_init_loads_matching_tensors_and_frozen_layers_stay_put(tmp_path):
    _, body = train(SPECS / "digits-mlp.yaml", tmp_path, overrides=Overrides(epochs=3))
    checkpoint = body.run_dir / "last.safetensors"
    trainer = Trainer(load_spec(SPECS / "finetune.yaml"), runs_root=tmp_path / "runs", init=str(checkpoint))
    result = trainer.run()
    report = result.init_report
    assert sorted(report.matched) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert sorted(report.missing) == ["head.bias", "head.weight"]
    assert sorted(report.unexpected) == ["fc3.bias", "fc3.weight"]
    before = load_file(str(checkpoint))
    after = trainer.model.get_weights()
    np.testing.assert_array_equal(after["fc1.weight"], before["fc1.weight"])  # frozen
    np.testing.assert_array_equal(after["fc2.weight"], before["fc2.weight"])
    assert result.epochs[-1].eval_accuracy > 0.9  # the frozen body's features already separate digits


def test_init_with_nothing_matching_is_an_error(tmp_path):
    _, xor = train(SPECS / "xor.yaml", tmp_path, overrides=Overrides(epochs=1))
    with pytest.raises(RunError, match="no tensor of the checkpoint matches"):
        Trainer(load_spec(SPECS / "finetune.yaml"), runs_root=tmp_path / "runs",
                init=str(xor.run_dir / "last.safetensors")).run()


DIVERGING = textwrap.dedent("""\
    netc: 1
    name: boom
    inputs:
      x: {shape: [2]}
      label: {shape: [], dtype: int64, classes: 3}
    layers:
      - {name: fc, op: linear, out: 3}
      - {name: out, op: sigmoid}
    loss: {op: mse, input: out, target: label}
    optimizer: {type: sgd, lr: 1.0e+30}
    train: {batch: 10, epochs: 5}
    data:
      train: {source: blobs, n: 300, classes: 3}
""")


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_no_bad_checkpoint(tmp_path):
    loaded = load_spec_text(DIVERGING.replace("sigmoid", "identity"), str(tmp_path / "boom.yaml"), tmp_path)
    with pytest.raises(RunError) as info:
        train(loaded, tmp_path)
    message = str(info.value)
    assert "training diverged: the loss became" in message and "epoch 1, batch" in message
    assert "stopped before applying that update" in message and "no checkpoint was written yet" in message
    assert "lower the learning rate" in message
    assert not (tmp_path / "runs" / "boom" / "last.safetensors").exists()


def test_bad_data_is_refused_with_the_file_and_row(tmp_path):
    x = np.zeros((5, 2), np.float32)
    y = np.array([0, 1, 2, 7, 1])
    np.savez(tmp_path / "d.npz", x=x, label=y)
    text = DIVERGING.replace("{source: blobs, n: 300, classes: 3}", "{source: npz, path: d.npz}")
    loaded = load_spec_text(text, str(tmp_path / "s.yaml"), tmp_path)
    with pytest.raises(DataError) as info:
        train(loaded, tmp_path)
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.code == "E-DATA"
    assert "d.npz" in diagnostic.location.file
    assert "7" in diagnostic.message and "3" in diagnostic.message


def test_a_second_process_loads_the_compiled_plan_from_the_cache(tmp_path):
    code = textwrap.dedent(f"""
        from netc.spec import load_spec
        from netc.graph import build_graph
        from netc.runtime.model import Model
        m = Model(build_graph(load_spec({str(SPECS / 'xor.yaml')!r})), tier="fused")
        m.warm_up()
        f = m.plan.module.epoch
        print(sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # fills the cache if cold
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["1", "0"]  # loaded from disk, nothing recompiled


def test_keyboard_interrupt_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    train(SPECS / "xor.yaml", tmp_path, overrides=Overrides(epochs=1))
    assert signal.getsignal(signal.SIGINT) is before


def test_results_do_not_depend_on_a_model_run_before_in_the_process(tmp_path):
    """A plan with large GEMMs runs BLAS on every core; the next plan must get its own
    thread count back (it changes the order of sums, hence the bits of the weights)."""
    from netc.graph import build_graph
    from netc.runtime.gradcheck import random_batch
    from netc.runtime.model import Model

    _, first = train(SPECS / "digits-cnn.yaml", tmp_path / "a", overrides=Overrides(epochs=1))
    big = build_graph(load_spec(SPECS / "seed-cnn.yaml"))
    Model(big, dtype="float64", batch=4).loss_and_gradients(random_batch(big, 4, 0))  # BLAS on every core
    _, second = train(SPECS / "digits-cnn.yaml", tmp_path / "b", overrides=Overrides(epochs=1))
    a, b = _final_weights(first.run_dir), _final_weights(second.run_dir)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


_SAVE = """
import sys
from pathlib import Path
import numpy as np
from netc.runtime.checkpoint import save_checkpoint
weights = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.ones(2, np.float32),
           "bn.num_batches_tracked": np.array(7, np.int64)}
save_checkpoint(Path(sys.argv[1]), weights, {"fc.weight.m": np.zeros((2, 3), np.float32)},
                {"epoch": 3, "step": 12, "name": "naïve"})
"""


def test_the_same_checkpoint_has_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes its metadata in a per-process hash order; netc sorts it, so two runs with the
    same seed write identical files (a hash or a diff of two runs' checkpoints agrees)."""
    files = []
    for i in range(5):
        path = tmp_path / f"run{i}" / "last.safetensors"
        path.parent.mkdir()
        subprocess.run([sys.executable, "-c", _SAVE, str(path)], check=True, timeout=120)
        files.append(path)
    for name in ("last.safetensors", "last.state.safetensors"):
        contents = {(f.parent / name).read_bytes() for f in files}
        assert len(contents) == 1, name
    from netc.runtime.checkpoint import load_state, load_weights

    weights, state, progress = load_state(files[0])
    assert progress == {"epoch": 3, "step": 12, "name": "naïve"} and weights["bn.num_batches_tracked"].shape == ()
    assert np.array_equal(load_weights(files[0])["fc.weight"], np.arange(6, dtype=np.float32).reshape(2, 3))
    from safetensors import safe_open

    with safe_open(str(files[0]), "np") as handle:  # still a safetensors file any reader opens
        assert handle.metadata() == {"format": "netc-1", "progress": '{"epoch": 3, "step": 12, "name": "na\\u00efve"}'}

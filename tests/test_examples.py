"""The example scripts as a user runs them: train, evaluate and predict, on synthetic posters."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_poster_folder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args, cwd, env_extra=None, check=True):
    import os
    env = {**os.environ, "NN_CACHE_DIR": str(Path(cwd) / "cache"), **(env_extra or {})}
    env.pop("POSTERS_DIR", None)
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A paper-shaped MLP trained for 3 epochs on 80 synthetic posters at 16 x 16."""
    work = tmp_path_factory.mktemp("work")
    data = make_poster_folder(work / "posters", n=80, seed=0)
    out = run("train_posters.py", "--data", data, "--size", 16, "--epochs", 3,
              "--hidden", 32, 16, 16, 16, "--lr", 0.5, "--out", work / "run", cwd=work)
    return work, data, out.stdout


def test_train_prints_the_papers_lines_then_honest_metrics(trained):
    work, _, stdout = trained
    lines = stdout.splitlines()
    train_lines = [i for i, line in enumerate(lines) if line.startswith("TRAIN LOSS: ")]
    assert len(train_lines) == 3
    for k, i in enumerate(train_lines, start=1):
        float(lines[i].split(": ")[1])
        assert lines[i + 1].startswith(f"Epoch [{k}], val_loss: ")
        assert ", val_acc: " in lines[i + 1]
        assert lines[i + 2].startswith("| | precision_at_3") and lines[i + 4].startswith("| model")
        assert lines[i + 5].startswith("| prior")
    summary = json.loads((work / "run" / "metrics.json").read_text())
    assert len(summary["history"]) == 3 and summary["peak_rss_gb"] > 0
    split = json.loads((work / "run" / "split.json").read_text())
    assert len(split["train"]) == 60 and len(split["val"]) == 20
    assert not set(split["train"]) & set(split["val"])


def test_the_textbook_loop_trains_the_same_weights_as_stepping_inside_backward(trained):
    """train_posters.py steps inside backward by default; --step-after-backward keeps every
    gradient first. Both are plain SGD, so three epochs must end at the same weights."""
    from nn.checkpoint import load_checkpoint
    work, data, _ = trained
    run("train_posters.py", "--data", data, "--size", 16, "--epochs", 3, "--hidden", 32, 16, 16,
        16, "--lr", 0.5, "--out", work / "textbook", "--step-after-backward", cwd=work)
    # (before test_resume_from_last_continues_the_run, below, trains run/last.npz on)
    (fused, fused_meta), (textbook, textbook_meta) = (
        load_checkpoint(work / run_dir / "last.npz") for run_dir in ("run", "textbook"))
    # the flag reached the run: otherwise this would compare two identical fused runs
    assert fused_meta["config"]["step_after_backward"] is False
    assert textbook_meta["config"]["step_after_backward"] is True
    assert fused.keys() == textbook.keys()
    for name in fused:
        np.testing.assert_allclose(fused[name], textbook[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_evaluate_scores_posters_the_model_never_saw(trained):
    work, _, _ = trained
    unseen = make_poster_folder(work / "unseen", n=40, seed=7)
    out = run("evaluate.py", "--checkpoint", work / "run" / "best.npz", "--data", unseen,
              "--json", work / "eval.json", cwd=work)
    assert "| model" in out.stdout and "| prior" in out.stdout
    scores = json.loads((work / "eval.json").read_text())
    assert set(scores) == {"n_posters", "paper_accuracy", "precision_at_3", "recall_at_3",
                           "micro_f1_at_3", "map", "macro_auc"}
    assert scores["n_posters"] == {"model": 40, "prior": 40}
    # the synthetic genres are learnable, so even this small model beats the prior
    assert scores["map"]["model"] > scores["map"]["prior"]


def test_predict_names_three_genres_for_any_size_mode_and_format(trained):
    work, data, _ = trained
    poster = np.asarray(Image.open(next((data / "Images").iterdir())))
    paths = []
    for mode, name in (("RGB", "a.jpg"), ("L", "b.png"), ("RGBA", "c.png"), ("P", "d.png")):
        img = Image.fromarray(poster).resize((123, 77)).convert(mode)
        img.save(work / name)
        paths.append(work / name)
    out = run("predict_poster.py", *paths, "--checkpoint", work / "run" / "best.npz", cwd=work)
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    for path, line in zip(paths, lines):
        name, genres = line.split(": ", 1)
        assert name == str(path) and len(genres.split(", ")) == 3
        probabilities = [float(g.rsplit(" ", 1)[1]) for g in genres.split(", ")]
        assert probabilities == sorted(probabilities, reverse=True)


def test_resume_from_last_continues_the_run(trained):
    work, data, _ = trained
    out = run("train_posters.py", "--data", data, "--size", 16, "--epochs", 4,
              "--hidden", 32, 16, 16, 16, "--lr", 0.5, "--out", work / "run",
              "--resume", work / "run" / "last.npz", cwd=work)
    assert "resumed from" in out.stdout and out.stdout.count("TRAIN LOSS") == 1
    assert "Epoch [4]" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent"], "download.py"),
    (["--data", "{data}", "--resume", "{work}/nope.npz"], "nope.npz"),
])
def test_user_mistakes_get_one_line_and_status_2(trained, args, message):
    work, data, _ = trained
    args = [a.format(data=data, work=work) for a in args]
    out = run("train_posters.py", *args, "--size", 16, "--out", work / "bad", cwd=work,
              check=False)
    assert out.returncode == 2 and message in out.stderr
    assert "Traceback" not in out.stderr


def test_predict_without_a_checkpoint_says_how_to_get_one(tmp_path):
    Image.new("RGB", (20, 30)).save(tmp_path / "x.jpg")
    out = run("predict_poster.py", tmp_path / "x.jpg", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "train_posters.py" in out.stderr


def test_a_bad_image_among_good_ones_is_named_and_the_rest_still_predicted(trained):
    work, data, _ = trained
    (work / "broken.jpg").write_bytes(b"not a poster")
    good = next((data / "Images").iterdir())
    out = run("predict_poster.py", work / "broken.jpg", good,
              "--checkpoint", work / "run" / "best.npz", cwd=work, check=False)
    assert out.returncode == 2 and "broken.jpg" in out.stderr
    assert out.stdout.startswith(str(good))


def test_train_on_50_real_posters(real_posters, tmp_path):
    out = run("train_posters.py", "--data", real_posters, "--limit", 50, "--size", 32,
              "--epochs", 1, "--hidden", 16, 16, 16, 16, "--out", tmp_path / "run",
              cwd=tmp_path)
    assert "50 posters at 32 x 32: 38 train, 12 validation" in out.stdout
    assert "Epoch [1], val_loss: " in out.stdout

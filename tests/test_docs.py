"""docs/backprop.md stays true: its links point at the code it quotes, its commands run.

The ```bash commands run as written, but in a copy of the repository (nn/, examples/, tests/,
docs/, pyproject.toml) in a temporary folder: the doc's own commands write its images into
docs/img/, and regenerating them inside the checkout would leave binary diffs behind whenever
matplotlib's output differs by a byte. ```text blocks (the real dataset, long runs) are not run.
Also here: the gradient-check demo, and the plots issue 7 added (plot_history.py,
predict_poster.py --plot), with and without matplotlib.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import GENRES, make_poster_folder

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backprop.md"
TEXT = DOC.read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
ANCHORED = re.compile(r"\]\(\.\./([^)#\s]+)#L(\d+)(?:-L(\d+))?\)")
RELATIVE = re.compile(r"\]\(((?:\.\./|img/)[^)#\s]*)")
IMAGE = re.compile(r"!\[[^\]]*\]\(img/([^)\s]+)\)")
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def blocks(language):
    return [m.group(2) for m in FENCE.finditer(TEXT) if m.group(1) == language]


def python_on_path(tmp_path):
    """PATH with `python` meaning this interpreter, as in the environment the doc assumes."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    if not (shim / "python").exists():
        (shim / "python").symlink_to(sys.executable)
    return f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"


def run(args, cwd, tmp_path, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=python_on_path(tmp_path), **(env_extra or {}))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------ links and quoted code

def find_lines(lines, quote):
    """1-based (first, last) where the quoted lines occur in lines, ignoring indentation."""
    want = [q.strip() for q in quote]
    for i in range(len(lines) - len(want) + 1):
        if [line.strip() for line in lines[i:i + len(want)]] == want:
            return i + 1, i + len(want)
    return None


def test_every_line_anchored_link_is_followed_by_the_code_at_those_lines():
    links = list(ANCHORED.finditer(TEXT))
    assert len(links) >= 10
    fences = [(m.start(), m.group(1), m.group(2)) for m in FENCE.finditer(TEXT)]
    problems = []
    for k, link in enumerate(links):
        path, first = link.group(1), int(link.group(2))
        last = int(link.group(3) or first)
        name = f"{path}#L{first}-L{last}"
        following = links[k + 1].start() if k + 1 < len(links) else len(TEXT)
        quote = next((body for start, language, body in fences
                      if link.end() < start < following and language == "python"), None)
        if quote is None:
            problems.append(f"{name}: no ```python quote between this link and the next")
            continue
        lines = (ROOT / path).read_text().splitlines()
        quoted = quote.rstrip("\n").splitlines()
        if textwrap.dedent("\n".join(lines[first - 1:last])) == textwrap.dedent(quote).rstrip():
            continue
        moved = find_lines(lines, quoted)
        problems.append(f"{name}: the code there differs from the quote; " + (
            f"it is now at L{moved[0]}-L{moved[1]}: update the link" if moved
            else "the quoted code is gone: update the quote and the link"))
    assert not problems, "\n".join(problems)


def test_every_relative_link_and_image_exists():
    targets = RELATIVE.findall(TEXT)
    assert targets
    missing = [t for t in targets if not (DOC.parent / t).exists()]
    assert not missing, f"docs/backprop.md links to missing files: {missing}"


def test_doc_images_are_small_made_by_a_command_on_the_page_and_never_posters():
    shown = set(IMAGE.findall(TEXT))
    on_disk = {p.name for p in (ROOT / "docs" / "img").iterdir()}
    assert shown and shown == on_disk, (
        f"docs/img must hold exactly the images the doc shows: {sorted(on_disk ^ shown)}")
    commands = "\n".join(blocks("bash") + blocks("text")).splitlines()
    for name in shown:
        assert (ROOT / "docs" / "img" / name).stat().st_size < 100_000, f"{name} is too big"
        makers = [c for c in commands if f"docs/img/{name}" in c]
        assert makers, f"no command in the doc writes docs/img/{name}"
        assert not any("predict_poster" in c for c in makers), "posters never go in docs/"


# ------------------------------------------------------------------ the commands, as written

@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    copy = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for folder in ("nn", "examples", "tests", "docs"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy)
    return copy


BASH = blocks("bash")


def test_the_doc_has_runnable_commands():
    assert any("gradcheck_demo.py" in b for b in BASH)
    assert any("toy_multilabel.py --plot docs/img/toy_loss.png" in b for b in BASH)


@pytest.mark.parametrize("command", BASH, ids=[b.splitlines()[0][:40] for b in BASH])
def test_each_bash_command_runs_as_written(command, repo_copy, tmp_path):
    result = run(["bash", "-euo", "pipefail", "-c", command], repo_copy, tmp_path)
    assert result.returncode == 0, f"{command}\nexited {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    for image in re.findall(r"docs/img/\S+\.png", command):
        assert (repo_copy / image).exists() == HAVE_MATPLOTLIB


# ------------------------------------------------------------------ the gradient-check demo

def test_gradcheck_demo_passes_correct_code_and_fails_broken_code(tmp_path):
    result = run([sys.executable, str(ROOT / "examples" / "gradcheck_demo.py")], tmp_path,
                 tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    verdicts = [line.split(":")[0] for line in out.splitlines()
                if line.startswith(("PASS:", "FAIL:"))]
    # Linear, MLP, bias bug, ReLU bug, kink, kink moved away
    assert verdicts == ["PASS", "PASS", "FAIL", "FAIL", "FAIL", "PASS"]
    bias_bug = out.split("Bug 1")[1].split("Bug 2")[0]
    assert [line.split()[0] for line in bias_bug.splitlines() if "<-- FAIL" in line] == ["bias"]
    relu_bug = out.split("Bug 2")[1].split("=== 4.")[0]
    assert {line.split()[0] for line in relu_bug.splitlines() if "<-- FAIL" in line} == {
        "0.weight", "0.bias", "2.weight", "2.bias"}


# ------------------------------------------------------------------ plots

def test_plot_history_draws_a_runs_losses(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"history": [{"train_loss": 0.3, "val": {"val_loss": 0.26}},'
                       ' {"train_loss": 0.25, "val": {"val_loss": 0.25}}]}')
    out = tmp_path / "plots" / "loss.png"
    result = run([sys.executable, str(ROOT / "examples" / "plot_history.py"), str(metrics),
                  "--out", str(out), "--baseline", "0.24"], tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.exists() == HAVE_MATPLOTLIB


def test_plot_history_names_a_file_that_is_not_metrics(tmp_path):
    (tmp_path / "notes.json").write_text("[1, 2]")
    result = run([sys.executable, str(ROOT / "examples" / "plot_history.py"),
                  str(tmp_path / "notes.json"), "--out", str(tmp_path / "x.png")],
                 tmp_path, tmp_path)
    assert result.returncode == 2 and "notes.json" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from nn.models import paper_mlp, save_model

    spec = {"name": "paper_mlp", "kwargs": {"input_size": 8 * 8 * 3, "hidden": [8, 8, 8, 8],
                                            "n_out": len(GENRES)}}
    path = tmp_path / "tiny.npz"
    save_model(path, paper_mlp(**spec["kwargs"]), {"model": spec, "output": "probabilities",
                                                   "genres": GENRES, "image_size": [8, 8]})
    return path


def predict(tmp_path, checkpoint, *args, env_extra=None):
    data = make_poster_folder(tmp_path / "posters", n=4)
    images = sorted((data / "Images").iterdir())[:3]
    return run([sys.executable, str(ROOT / "examples" / "predict_poster.py"), *map(str, images),
                "--checkpoint", str(checkpoint), "--labels", str(data / "train.csv"),
                *map(str, args)], tmp_path, tmp_path, env_extra=env_extra)


def test_predict_poster_draws_genres_under_posters(tmp_path, tiny_checkpoint):
    out = tmp_path / "run" / "predictions.png"
    result = predict(tmp_path, tiny_checkpoint, "--plot", out)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 + HAVE_MATPLOTLIB   # + "wrote ..."
    assert out.exists() == HAVE_MATPLOTLIB
    if HAVE_MATPLOTLIB:
        from PIL import Image
        with Image.open(out) as img:
            assert img.width > 3 * 100 and img.height > 200


def test_predict_poster_refuses_to_write_posters_into_docs(tmp_path, tiny_checkpoint):
    target = ROOT / "docs" / "img" / "posters_test.png"
    result = predict(tmp_path, tiny_checkpoint, "--plot", target)
    assert result.returncode == 2 and "docs/" in result.stderr
    assert not target.exists()


def test_without_matplotlib_scripts_still_run_and_say_how_to_get_plots(tmp_path,
                                                                       tiny_checkpoint):
    blocker = tmp_path / "no_matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden by a test')")
    hide = {"PYTHONPATH": str(blocker)}
    toy = run([sys.executable, str(ROOT / "examples" / "toy_multilabel.py"), "--epochs", "2",
               "--plot", str(tmp_path / "toy.png")], tmp_path, tmp_path, env_extra=hide)
    posters = predict(tmp_path, tiny_checkpoint, "--plot", tmp_path / "p.png", env_extra=hide)
    for result in (toy, posters):
        assert result.returncode == 0, result.stderr
        assert "pip install -e .[plots]" in result.stderr
    assert not (tmp_path / "toy.png").exists() and not (tmp_path / "p.png").exists()


def test_plot_poster_predictions_lays_out_any_number_of_posters(tmp_path):
    if not HAVE_MATPLOTLIB:
        pytest.skip("matplotlib is not installed")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from plotting import plot_poster_predictions
    finally:
        sys.path.remove(str(ROOT / "examples"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (45, 30, 3), dtype=np.uint8) for _ in range(7)]
    truth = [["Drama", "Comedy"], None, ["Action", "Adventure", "Sci-Fi", "Thriller"]] + [None] * 4
    top = [[("Drama", 0.5), ("Comedy", 0.4), ("Romance", 0.2)]] * 7
    path = plot_poster_predictions(images, truth, top, tmp_path / "grid.png")
    assert path is not None and (tmp_path / "grid.png").stat().st_size > 0

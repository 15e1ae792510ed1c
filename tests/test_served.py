"""The served model (issue 24): raw review text in, P(pos) and label out, through MLflow's own
tools, in processes that cannot import `sweep`, with the answers training gave."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import batches, data, served, train
from sweep.config import compose_config
from sweep.data.encoding import OOV, encode, encode_texts, word_index
from sweep.distributed import free_port
from sweep.export import export
from sweep.model import build_model
from sweep.served.scorer import CLASSIFIER, Preprocessing, Scorer
from sweep.vocabulary import ENSEMBLE_OF_TAG, FINAL_TAG, SOURCE_RUN_TAG
from tests.conftest import Servers, Swept, copy_store, tiny_overrides

PYTHON = sys.executable
REVIEWS = ["a great film", "a dreadful film"]
#: The models the equality test compares, each with its own data and batching settings: fixed
#: batches that cut reviews (12-36 tokens) to 16 and the 23 words to 17, post-padded; bucketed
#: ones of the defaults (pre), at a seq_len (24) that cuts some reviews and not others; and those
#: with words' 2- and 3-grams hashed into 40 buckets (issue 25).
SETTINGS = {
    "fixed": (
        "train.batching=fixed",
        "data.seq_len=16",
        "data.num_words=20",
        "data.padding=post",
        "data.truncating=post",
    ),
    "bucketed": ("train.batching=bucketed", "data.seq_len=24"),
    "ngrams": (
        "train.batching=bucketed",
        "data.seq_len=24",
        "data.ngrams=3",
        "data.ngram_buckets=40",
    ),
}


# --- quick: the pieces ---------------------------------------------------------------------------


def test_a_served_review_gets_the_ids_training_gave_it() -> None:
    texts = [
        "A GREAT film<br /><br />it's the 2nd time, rock'n'roll!",
        "café İstanbul don't",
        "",
        "words never seen in training: zyzzyva",
    ]
    ids, vocabulary = encode(texts, n_train=2, num_words=8)  # the vocabulary cut to 5 words
    served_ids = encode_texts(texts, word_index(vocabulary))
    assert served_ids.tolist() == ids.tolist()
    assert (served_ids.values == OOV).any() and served_ids.tolist()[2] == [data.START]


def test_a_served_review_gets_the_ngram_ids_training_gave_it(
    tiny_imdb: Path, tmp_path: Path
) -> None:
    """Hashed over the whole review, then cut and padded: as the cached training data was."""
    overrides = [*tiny_overrides(tmp_path, tiny_imdb), *SETTINGS["fixed"], "data.ngrams=3"]
    cfg = compose_config([*overrides, "data.ngram_buckets=40", "model.mask_padding=false"])
    encoded = train.load(cfg)
    preprocessing = train.preprocessing(cfg, encoded)
    preprocessing.save(tmp_path / "preprocessing.json")
    scorer = Scorer(build_model(cfg), Preprocessing.load(tmp_path / "preprocessing.json"))
    texts = in_corpus_order(tiny_imdb)[: len(encoded.train)]
    expected = data.pad(encoded.train, cfg.data.seq_len, cfg.data.padding, cfg.data.truncating)
    assert np.array_equal(scorer.encode(texts), expected)
    assert expected.shape[2] == 3 and expected[..., 1:].max() == 40  # buckets 1..40 in use
    assert (encoded.train.lengths > cfg.data.seq_len).any()  # some reviews cut after hashing


def test_the_shipped_modules_import_nothing_from_sweep() -> None:
    """The served model's code works as the package `attention_sweep_served`: no absolute import
    of `sweep`, and every relative one lands on a module shipped with it."""
    root = Path(served.__file__).parents[1]
    shipped = {Path(name).with_suffix("") for name in served.SHIPPED}
    for name in served.SHIPPED:
        here = Path(name).parent
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.split(".")[0] == "sweep"], name
            elif isinstance(node, ast.ImportFrom) and node.level:
                target = here.joinpath(*[".."] * (node.level - 1), *node.module.split("."))
                assert Path(os.path.normpath(target)) in shipped, (name, node.module)
            elif isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] != "sweep", (name, node.module)


# --- slow: models trained and logged once for the module ---------------------------------------


@dataclass(frozen=True)
class Logged:
    """A tiny run of `train.run` whose served model was logged: its config and model URI."""

    cfg: DictConfig
    uri: str


class Trained(dict):
    """SETTINGS name -> its tiny run of `train.run`, trained on first use: the module's tests
    may land on different workers (xdist), each training only the models its tests read."""

    def __init__(self, work: Path, data_path: Path) -> None:
        super().__init__()
        self.work, self.data_path = work, data_path

    def __missing__(self, name: str) -> Logged:
        overrides = [*tiny_overrides(self.work, self.data_path), "tracking.log_models=best"]
        cfg = compose_config([*overrides, f"name={name}", *SETTINGS[name]])
        train.run(cfg)
        client = MlflowClient(cfg.tracking.uri)
        (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        self[name] = Logged(cfg, f"runs:/{run.info.run_id}/model")
        return self[name]


@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory, tiny_imdb: Path, migrated_store: Path
) -> Trained:
    """The SETTINGS runs, their models logged as every run logs them, for the whole module."""
    work = tmp_path_factory.mktemp("served")
    copy_store(migrated_store, work)
    return Trained(work, tiny_imdb)


def no_sweep_env(work: Path, tracking_uri: str) -> dict[str, str]:
    """An environment whose Python cannot import `sweep`: a package of that name that refuses to
    load comes first on the path (the checkout's own is installed editable, behind it)."""
    blocker = work / "no-sweep" / "sweep"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text("raise ImportError('a served model needs no sweep')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "")])  # activated
    return {**env, "PYTHONPATH": str(blocker.parent), "MLFLOW_TRACKING_URI": tracking_uri}


#: Run in a fresh process that cannot import sweep: load the model, predict two reviews.
LOAD_AND_PREDICT = """
import json, sys
try:
    import sweep
except ImportError:
    pass
else:
    sys.exit("sweep is importable here")
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
answers = model.predict(json.loads(sys.argv[2]))
print(json.dumps({
    "probabilities": [a.probability for a in answers],
    "labels": [a.label for a in answers],
    "sweep_modules": sorted(m for m in sys.modules if m.split(".")[0] == "sweep"),
    "shipped_from": sys.modules["attention_sweep_served"].__file__,
}))
"""


@pytest.mark.slow
def test_a_logged_model_predicts_text_in_a_process_without_sweep(
    logged: Trained, tmp_path: Path
) -> None:
    run = logged["fixed"]
    env = no_sweep_env(tmp_path, str(run.cfg.tracking.uri))
    result = subprocess.run(
        [PYTHON, "-c", LOAD_AND_PREDICT, run.uri, json.dumps(REVIEWS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["sweep_modules"] == []
    assert f"{os.sep}code{os.sep}attention_sweep_served" in answer["shipped_from"]
    probabilities = answer["probabilities"]
    assert len(probabilities) == 2 and all(0 < p < 1 for p in probabilities)
    assert probabilities[0] > probabilities[1], "'great' is a positive word in the tiny data"
    here = mlflow.pyfunc.load_model(run.uri).predict(REVIEWS)  # the harness's own modules
    assert probabilities == pytest.approx([a.probability for a in here], abs=1e-6)
    assert answer["labels"] == [a.label for a in here]


@pytest.mark.slow
def test_a_logged_model_says_what_it_takes_and_needs(logged: Trained) -> None:
    model = mlflow.models.get_model_info(logged["fixed"].uri)
    assert [(i["type"], i.get("name")) for i in model.signature.inputs.to_dict()] == [
        ("string", None)
    ]
    files = Path(mlflow.artifacts.download_artifacts(logged["fixed"].uri))
    example = json.loads((files / "serving_input_example.json").read_text())
    assert example == {"inputs": list(served.EXAMPLES)}
    requirements = (files / "requirements.txt").read_text().splitlines()
    for package in ("mlflow", "tensorflow", "keras", "numpy"):
        assert any(line.startswith(f"{package}==") for line in requirements), requirements


def in_corpus_order(root: Path) -> list[str]:
    """The tiny archive's reviews in the order the harness encodes them: train then test, neg
    then pos, by file name."""
    return [
        path.read_text()
        for split in data.SPLIT_NAMES
        for label in data.LABEL_NAMES
        for path in sorted((root / split / label).glob("*.txt"))
    ]


def harness_predictions(
    classifier: keras.Model, cfg: DictConfig, reviews: data.Ragged
) -> np.ndarray:
    """P(pos) per review as training fed the classifier: fixed batches padded to seq_len, or
    `batches.bucketed`'s (each review's index rides along as its label, to put them back)."""
    seq_len = cfg.data.seq_len
    cut = reviews.truncate(seq_len, cfg.data.truncating)
    if cfg.train.batching == "fixed":
        x = data.pad(cut, seq_len, cfg.data.padding, cfg.data.truncating)
        return classifier.predict(x, batch_size=cfg.train.batch_size, verbose=0)[:, 1]
    assert len(batches.boundaries(seq_len, cut.lengths)) > 1, "the batches are bucketed"
    found = np.full(len(cut), np.nan)
    order = np.arange(len(cut), dtype=np.int32)
    for x, index in batches.bucketed(cut, order, cfg.train.batch_size, seq_len):
        found[index.numpy()] = keras.ops.convert_to_numpy(classifier(x, training=False))[:, 1]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("batching", list(SETTINGS))
def test_the_served_answer_is_the_harness_prediction(logged: Trained, batching: str) -> None:
    run = logged[batching]
    encoded = train.load(run.cfg)
    reviews = data.Ragged.from_sequences([*encoded.train, *encoded.test])
    texts = in_corpus_order(Path(run.cfg.data.path))
    model = mlflow.pyfunc.load_model(run.uri)
    scorer = model.unwrap_python_model()._scorer
    seq_len, truncating = run.cfg.data.seq_len, run.cfg.data.truncating
    served_ids = encode_texts(texts, word_index(encoded.vocabulary))
    served_ids = data.with_ngrams(served_ids, run.cfg.data.ngrams, run.cfg.data.ngram_buckets or 0)
    assert served_ids.tolist() == reviews.tolist()  # the same ids, START and OOV included
    if batching == "fixed":
        padded = data.pad(reviews, seq_len, run.cfg.data.padding, truncating)
        assert np.array_equal(scorer.encode(texts), padded)
        assert (reviews.lengths > seq_len).any() and (padded == OOV).any()
        assert len(encoded.vocabulary) == run.cfg.data.num_words
    files = Path(mlflow.artifacts.download_artifacts(run.uri))
    classifier = keras.saving.load_model(files / "artifacts" / f"{CLASSIFIER}.keras", compile=False)
    expected = harness_predictions(classifier, run.cfg, reviews)
    answers = model.predict(texts)
    assert np.abs(np.array([a.probability for a in answers]) - expected).max() < 1e-5
    assert [a.label for a in answers] == [data.LABEL_NAMES[int(p > 0.5)] for p in expected]


# --- slow: `mlflow models serve` on the registered final model of a sweep ----------------------


@pytest.fixture
def serve(tmp_path: Path, servers: Servers) -> Callable[[str, str], str]:
    """Start docs/serving.md's `mlflow models serve` for a model URI on a free loopback port,
    in a process that cannot import sweep; its URL."""

    def start(model_uri: str, tracking_uri: str) -> str:
        port = free_port()
        command = [str(Path(PYTHON).parent / "mlflow"), "models", "serve", "-m", model_uri]
        command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        servers.start(command, f"{url}/ping", "serve", env=no_sweep_env(tmp_path, tracking_uri))
        return url

    return start


def invoke(url: str, body: object) -> tuple[int, dict]:
    """POST `body` as JSON (bytes as they are) to the server's /invocations: (HTTP status, JSON
    answer)."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_the_registered_final_model_serves_reviews_over_http(
    swept: Swept, tmp_path: Path, serve
) -> None:
    """The docs' `mlflow models serve -m models:/NAME/VERSION --env-manager local`, then one
    request with two reviews; bad input is a clear error (400) or a documented answer, and the
    server stays up. The model is `export.ensemble=2`'s (a single best's is test_export's): the
    average of the two best trials, each retrained in its own nested run, its logged test score
    the served answers' (export.evaluate's single evaluation)."""
    cfg = swept.copy(
        tmp_path,
        "export.top_k=2",
        "export.ensemble=2",
        "export.evaluate=true",
        "export.registered_model=tiny-best",
    )
    exported = export(cfg)  # retrains the two best, scores their average once, registers it
    client = MlflowClient(cfg.tracking.uri)
    (final,) = client.search_runs(
        [client.get_experiment_by_name(cfg.name).experiment_id], f"tags.{FINAL_TAG} = 'true'"
    )
    best_two = exported.table[exported.table["status"] == "FINISHED"]["run_id"][:2]
    assert final.data.tags[ENSEMBLE_OF_TAG] == ",".join(best_two)
    assert "val_accuracy" in final.data.metrics  # the average's own, on the trials' split
    members = client.search_runs(
        [final.info.experiment_id], f"tags.mlflow.parentRunId = '{final.info.run_id}'"
    )
    assert sorted(m.data.tags[SOURCE_RUN_TAG] for m in members) == sorted(best_two)
    (version,) = client.search_model_versions("name = 'tiny-best'")
    texts = in_corpus_order(swept.data)
    test = texts[len(texts) - len(train.load(cfg).test) :]
    labels = [label for label in data.LABEL_NAMES for _ in range(len(test) // 2)]
    answers = mlflow.pyfunc.load_model(f"models:/tiny-best/{version.version}").predict(test)
    accuracy = np.mean([a.label == label for a, label in zip(answers, labels, strict=True)])
    assert accuracy == pytest.approx(final.data.metrics["test_accuracy"], abs=1e-9)
    url = serve(f"models:/tiny-best/{version.version}", str(cfg.tracking.uri))
    status, answer = invoke(url, {"inputs": REVIEWS})
    assert status == 200, answer
    predictions = answer["predictions"]
    assert [set(p) for p in predictions] == [{"probability", "label"}] * 2
    assert predictions[0]["probability"] > predictions[1]["probability"]

    long_review = "a great film " * 33_334  # 100,002 words: cut to the last seq_len tokens
    status, answer = invoke(url, {"inputs": ["", long_review]})
    assert status == 200 and len(answer["predictions"]) == 2, answer
    assert invoke(url, {"inputs": []}) == (200, {"predictions": []})
    for bad in (
        {"inputs": ["a great film", 5]},  # not a string
        {"inputs": [None]},
        {"dataframe_split": {"columns": ["text"], "data": [["a great film"]]}},  # a column
        {"inputs": {"text": ["a great film"]}},
        {"inputs": "a great film"},  # not a list
    ):
        status, answer = invoke(url, bad)
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", (bad, answer)
    status, answer = invoke(url, b"not json")
    assert status == 400 and answer["error_code"] == "BAD_REQUEST", answer
    assert invoke(url, {"inputs": REVIEWS})[0] == 200, "the server is still up"

"""The chief asks for a token (issue 20): every call to the oracle carries the shared secret,
the chief refuses calls without it (or with another) before the oracle sees them, a worker with
a wrong token stops in one line, and the secret is never a config value.

Real gRPC on loopback, a real Keras Tuner oracle served by the chief's own server
(`serving.start_oracle`), and the worker's own channel (`cluster.oracle_channel`).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.errors import FatalError
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_client
from omegaconf import DictConfig, OmegaConf

from sweep import cluster, distributed
from sweep.config import compose_config
from sweep.distributed import launcher
from sweep.errors import ConfigError, SweepError
from sweep.schema import DistributedConfig
from sweep.schema.distributed import TOKEN_ENV, oracle_token
from sweep.tuner import liveness, serving
from sweep.tuner.oracles import RandomOracle
from tests.conftest import chief_oracle

#: The sweep's secret and an intruder's guess (both long enough to be accepted as tokens).
TOKEN = "right-token-0123456789abcdef"
WRONG = "wrong-token-0123456789abcdef"


def _dist(address: str, **settings: str) -> DictConfig:
    """A `distributed` section as a process's config holds it."""
    node = OmegaConf.structured(DistributedConfig(oracle=address, connect_timeout_s=10.0))
    node.merge_with(settings)
    return node


@dataclass
class Chief:
    """A chief's oracle, served on loopback by the chief's own server."""

    oracle: RandomOracle
    dist: DictConfig
    server: grpc.Server

    def channel(
        self, token: str | None, monkeypatch: pytest.MonkeyPatch, **tls: str
    ) -> grpc.Channel:
        """A worker's channel to this chief with `token` in its environment (None: none)."""
        if token is None:
            monkeypatch.delenv(TOKEN_ENV, raising=False)
        else:
            monkeypatch.setenv(TOKEN_ENV, token)
        return cluster.oracle_channel(_dist(str(self.dist.oracle), **tls))


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **tls: str) -> Chief:
    oracle = chief_oracle(tmp_path)  # heartbeats on, as a chief's oracle has them
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # what the chief reads when it starts serving
    dist = _dist(f"127.0.0.1:{distributed.free_port()}", role="chief", **tls)
    server, _ = serving.start_oracle(oracle, dist)
    return Chief(oracle, dist, server)


@pytest.fixture
def chief(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chief]:
    served = _serve(tmp_path, monkeypatch)
    yield served
    served.server.stop(None)


def _stub(channel: grpc.Channel) -> object:
    return protos.get_service_grpc().OracleStub(channel)


def _refused(call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value


def test_calls_without_the_token_or_with_another_change_nothing(
    chief: Chief, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sweep.cluster")
    service = protos.get_service()
    plain = grpc.insecure_channel(str(chief.dist.oracle))  # Keras Tuner's own: no token
    intruders = [_stub(plain), _stub(chief.channel(WRONG, monkeypatch))]
    worker = _stub(chief.channel(TOKEN, monkeypatch))
    create = service.CreateTrialRequest(tuner_id="intruder")
    for stub in intruders:
        _refused(lambda stub=stub: stub.CreateTrial(create, timeout=10))
    assert chief.oracle.trials == {} and chief.oracle.ongoing_trials == {}
    assert not chief.oracle.tuner_ids

    held = Trial.from_proto(
        worker.CreateTrial(service.CreateTrialRequest(tuner_id="w1"), timeout=10).trial
    )
    assert held.status == TrialStatus.RUNNING
    assert list(chief.oracle.ongoing_trials) == ["w1"]
    held.status = TrialStatus.COMPLETED
    poison = service.UpdateTrialRequest(trial_id=held.trial_id, metrics={"val_accuracy": 1.0})
    for stub in intruders:
        _refused(lambda stub=stub: stub.UpdateTrial(poison, timeout=10))
        end = service.EndTrialRequest(trial=held.to_proto())
        _refused(lambda stub=stub, end=end: stub.EndTrial(end, timeout=10))
        _refused(lambda stub=stub: stub.CreateTrial(create, timeout=10))
    assert len(chief.oracle.trials) == 1 and list(chief.oracle.ongoing_trials) == ["w1"]
    kept = chief.oracle.trials[held.trial_id]
    assert kept.status == TrialStatus.RUNNING and not kept.metrics.exists("val_accuracy")

    worker.UpdateTrial(
        service.UpdateTrialRequest(trial_id=held.trial_id, metrics={"val_accuracy": 0.6}),
        timeout=10,
    )
    worker.EndTrial(service.EndTrialRequest(trial=held.to_proto()), timeout=10)
    assert chief.oracle.trials[held.trial_id].status == TrialStatus.COMPLETED
    assert chief.oracle.ongoing_trials == {}

    refusals = [r.getMessage() for r in caplog.records if "refused calls" in r.getMessage()]
    assert len(refusals) == 1, refusals  # 8 refused calls on 2 connections, one address
    assert "127.0.0.1" in refusals[0] and TOKEN_ENV in refusals[0]
    assert TOKEN not in caplog.text and WRONG not in caplog.text


@pytest.mark.parametrize(
    ("token", "says"),
    [(None, "this worker sends no token"), (WRONG, "the chief refused this worker's token")],
)
def test_a_worker_with_a_wrong_token_stops_in_one_line_at_start(
    chief: Chief, monkeypatch: pytest.MonkeyPatch, token: str | None, says: str
) -> None:
    cfg = OmegaConf.create({"distributed": _dist(str(chief.dist.oracle), role="worker")})
    if token is None:
        monkeypatch.delenv(TOKEN_ENV)
    else:
        monkeypatch.setenv(TOKEN_ENV, token)
    with pytest.raises(cluster.TokenRefused) as caught:
        cluster.wait_for_chief(cfg)
    line = str(caught.value)
    assert isinstance(caught.value, SweepError) and "\n" not in line  # the cli: one line, exit 2
    assert line.startswith(f"{says} (distributed.oracle={chief.dist.oracle}): "), line
    assert TOKEN_ENV in line and "distributed.token_file" in line and WRONG not in line
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    cluster.wait_for_chief(cfg)  # the right token: through


def test_every_call_of_a_worker_carries_the_token_heartbeats_too(
    chief: Chief, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, port = str(chief.dist.oracle).split(":")
    monkeypatch.setenv(cluster.ORACLE_IP_ENV, address)
    monkeypatch.setenv(cluster.ORACLE_PORT_ENV, port)
    monkeypatch.setenv(cluster.TUNER_ID_ENV, "w1")
    worker = _dist(str(chief.dist.oracle), role="worker", worker_id="w1")
    client = oracle_client.OracleClient(chief.oracle)  # Keras Tuner's, as a worker's tuner has
    line = liveness.reconnect_quickly(client, worker)
    trial = client.create_trial("w1")
    heartbeat = liveness.Heartbeat(line, "w1", timeout_s=5.0)  # its thread is not started
    heartbeat.hold(trial.trial_id)
    assert heartbeat.still_holds() and not heartbeat.lost()

    monkeypatch.setenv(TOKEN_ENV, WRONG)  # a chief restarted with another token, say
    refused = liveness.Heartbeat(liveness.reconnect_quickly(client, worker), "w1", timeout_s=5.0)
    refused.hold(trial.trial_id)
    with pytest.raises(liveness.ChiefRefused) as caught:
        client.get_space()
    # one line at the command line, and fatal to Keras Tuner: the search stops, no trial fails
    assert isinstance(caught.value, SweepError) and isinstance(caught.value, FatalError)
    assert str(caught.value).startswith("the chief refused this worker's token")
    refused.tick()  # a refused heartbeat is not fatal to its thread
    assert not refused.lost()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key (the worker's CA is the certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sweep test chief")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "chief.pem", directory / "chief.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_oracle_over_tls_still_asks_for_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    served = _serve(tmp_path, monkeypatch, tls_cert=str(cert), tls_key=str(key))
    try:
        cfg = OmegaConf.create(
            {"distributed": _dist(str(served.dist.oracle), role="worker", tls_ca=str(cert))}
        )
        cluster.wait_for_chief(cfg)  # TLS, checked against the CA, and the token: through
        monkeypatch.setenv(TOKEN_ENV, WRONG)
        with pytest.raises(cluster.TokenRefused, match="refused this worker's token"):
            cluster.wait_for_chief(cfg)
        plain = grpc.insecure_channel(str(served.dist.oracle))
        with pytest.raises(grpc.FutureTimeoutError):  # the port speaks TLS only
            grpc.channel_ready_future(plain).result(timeout=1.0)
        plain.close()
    finally:
        served.server.stop(None)


# --- the token's sources: never the config ------------------------------------------------------


def test_a_token_in_the_config_is_refused_without_showing_it(
    refused: Callable[..., str],
) -> None:
    line = refused("distributed.token=kept-out-of-every-log-0123456789")
    assert line.startswith("config error: distributed.token: is never read"), line
    assert "kept-out" not in line and TOKEN_ENV in line and "distributed.token_file" in line


def test_a_chief_beyond_loopback_without_a_token_stops_before_the_data(
    refused: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    line = refused(
        "+experiment=smoke",
        "tracking.uri=http://127.0.0.1:5000",
        "distributed.role=chief",
        "distributed.oracle=10.0.0.5:8000",
    )
    assert line.startswith("config error: distributed.oracle=10.0.0.5:8000: is beyond"), line
    assert TOKEN_ENV in line and "distributed.token_file" in line


ROLE = [
    "+experiment=smoke",
    "tracking.uri=http://127.0.0.1:5000",
    "distributed.role=worker",
    "distributed.worker_id=w1",
    "distributed.oracle=10.0.0.5:8000",
]


def test_the_token_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert oracle_token(compose_config(ROLE).distributed) == TOKEN
    secret = tmp_path / "oracle.token"
    secret.write_text(f"{WRONG}\n")
    cfg = compose_config([*ROLE, f"distributed.token_file={secret}"])
    assert oracle_token(cfg.distributed) == WRONG, "the file, when named, wins"
    assert WRONG not in OmegaConf.to_yaml(cfg) and str(secret) in OmegaConf.to_yaml(cfg)

    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match=f"^config error: {TOKEN_ENV}: the oracle's token"):
        compose_config(ROLE)
    missing = tmp_path / "no-such.token"
    with pytest.raises(ConfigError, match=r"distributed\.token_file=.*no-such\.token: cannot"):
        compose_config([*ROLE, f"distributed.token_file={missing}"])
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConfigError, match=r"distributed\.oracle=10\.0\.0\.5:8000: is beyond"):
        compose_config(ROLE)  # a worker too: no chief beyond loopback serves without a token


def test_local_mode_hands_its_own_token_to_the_children_in_their_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the user's is not the launch's
    monkeypatch.setattr(
        launcher, "_popen", lambda _config, overrides, env: started.append((overrides, env))
    )
    launcher._start_children([], tmp_path / "config.yaml", "http://127.0.0.1:5000", 2, 1)
    tokens = {env[TOKEN_ENV] for _, env in started}
    assert len(started) == 3 and len(tokens) == 1, tokens  # the chief and 2 workers: one token
    (token,) = tokens
    assert token != TOKEN and len(token) >= 32
    assert not any(token in " ".join(overrides) for overrides, _ in started), "never in argv"
    assert all("distributed.token_file=null" in overrides for overrides, _ in started)

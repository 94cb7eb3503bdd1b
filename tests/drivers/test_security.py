"""CURVE: allowed clients get in, every other client gets nothing; keys from ``dklscope keys``."""

from __future__ import annotations

import stat

import pytest

from dklscope.cli import main
from dklscope.drivers import DriverServer, InstrumentTimeout, MicroscopeClient
from dklscope.drivers.conformance import run_checks
from dklscope.drivers.security import ClientKeys, ServerKeys, generate_keys

from .conftest import FakeBackend


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    assert main(["keys", str(directory), "--name", "server", "--name", "alice"]) == 0
    generate_keys(directory / "others", ["mallory"])
    return directory


@pytest.fixture
def secure_server(key_dir):
    keys = ServerKeys.from_files(key_dir / "server.key_secret", [key_dir / "alice.key"])
    with DriverServer(FakeBackend(), "tcp://127.0.0.1:0", keys=keys, heartbeat_s=0.1) as server:
        yield server


def client_keys(key_dir, name):
    secret = key_dir / f"{name}.key_secret"
    if not secret.exists():
        secret = key_dir / "others" / f"{name}.key_secret"
    return ClientKeys.from_files(secret, key_dir / "server.key")


def test_keys_writes_pairs_with_private_secrets(key_dir):
    names = sorted(p.name for p in key_dir.iterdir() if p.is_file())
    assert names == ["alice.key", "alice.key_secret", "server.key", "server.key_secret"]
    assert stat.S_IMODE((key_dir / "alice.key_secret").stat().st_mode) == 0o600
    assert main(["keys", str(key_dir), "--name", "alice"]) == 2  # never overwrites a key


def test_an_allowed_client_is_served(secure_server, key_dir):
    keys = client_keys(key_dir, "alice")
    with MicroscopeClient(secure_server.endpoint, timeout_s=5.0, keys=keys) as client:
        assert "curve" in client.hello()["capabilities"]
        assert client.describe().name == "fake"
        assert client.acquire(0.01).seq == 0  # with events watched over CURVE too


@pytest.mark.parametrize("who", ["mallory", "no keys"])
def test_any_other_client_gets_nothing(secure_server, key_dir, who):
    keys = None if who == "no keys" else client_keys(key_dir, who)
    with MicroscopeClient(secure_server.endpoint, timeout_s=0.3, retries=0, keys=keys) as client:
        with pytest.raises(InstrumentTimeout):
            client.describe()
    assert secure_server.backend.names_called() == ["describe"]  # only the server's own


def test_a_client_that_trusts_another_server_key_gets_nothing(secure_server, key_dir):
    alice = client_keys(key_dir, "alice")
    impostor = ClientKeys(alice.public_key, alice.secret_key, alice.public_key)
    with MicroscopeClient(secure_server.endpoint, timeout_s=0.3, retries=0, keys=impostor) as c:
        with pytest.raises(InstrumentTimeout):
            c.describe()


def test_the_conformance_suite_runs_over_curve(secure_server, key_dir, capsys):
    results = run_checks(secure_server.endpoint, timeout_s=5.0, keys=client_keys(key_dir, "alice"))
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    args = ["conformance", secure_server.endpoint, "--timeout", "5"]
    keys = ["--server-key", str(key_dir / "server.key")]
    keys += ["--client-key", str(key_dir / "alice.key_secret")]
    assert main(args + keys) == 0
    assert f"{len(results)} of {len(results)} checks passed" in capsys.readouterr().out
    assert main([*args[:2], "--timeout", "0.2"]) == 1  # without keys: nothing passes

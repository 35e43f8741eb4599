"""The deployment files of config/deploy: the pod manifest, the container image, the systemd
unit. No container engine or cluster runs here, so each file is checked for what would break
it: its syntax, its settings against the service's, its probes against a real server."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import config
from tests.conftest import ROOT

DEPLOY = ROOT / "config" / "deploy"
SHIPPED = tomllib.loads((ROOT / "config" / "sidetask.toml").read_text())


def manifest() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "sidetask-pod.yaml").read_text()) if doc]


def pod() -> dict[str, Any]:
    (found,) = [doc for doc in manifest() if doc["kind"] == "Pod"]
    return found


def sidetask_container() -> dict[str, Any]:
    spec = pod()["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    (found,) = [c for c in containers if c["name"] == "sidetask"]
    return found


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def drain_grace(env: dict[str, str]) -> float:
    return float(env.get("SIDETASK_DRAIN_GRACE", SHIPPED["drain_grace"]))


def probe_url(probe: dict[str, Any]) -> str:
    command = probe["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    (url,) = re.findall(r"http://[^'\"]+", command[2])
    return str(url)


def test_manifest_documents() -> None:
    kinds = sorted(doc["kind"] for doc in manifest())
    assert kinds == ["PersistentVolumeClaim", "Pod"]
    for doc in manifest():
        assert doc["apiVersion"] == "v1" and doc["metadata"]["name"]


def test_sidecar_settings_are_real_and_load() -> None:
    container = sidetask_container()
    env = plain_env(container)
    names = {e["name"] for e in container["env"]}
    assert all(name.startswith("SIDETASK_") for name in names)
    settings = config.load(env={**env, "SIDETASK_SERVER_NAME": "my-app"})  # fieldRef resolved
    fields = {f"SIDETASK_{name.upper()}" for name in vars(settings)}
    assert names <= fields, f"not settings: {names - fields}"
    # a sidecar listens on the pod's loopback only: the API has no authentication yet
    assert settings.host == "127.0.0.1"
    assert container["args"] == ["serve"]


def test_the_database_is_on_the_pod_volume() -> None:
    spec = pod()["spec"]
    container = sidetask_container()
    db = Path(plain_env(container)["SIDETASK_DB"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(str(db.parent)) == "sidetask-data"
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes["sidetask-data"]["persistentVolumeClaim"]["claimName"]
    (pvc,) = [doc for doc in manifest() if doc["kind"] == "PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # one process owns a database file
    assert all(
        m["name"] in volumes
        for c in spec["containers"] + spec.get("initContainers", [])
        for m in c.get("volumeMounts", [])
    )


def test_probes_ask_ready_and_health_on_the_served_port() -> None:
    container = sidetask_container()
    port = int(plain_env(container)["SIDETASK_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert probe_url(container["readinessProbe"]) == f"http://127.0.0.1:{port}/ready"
    assert probe_url(container["livenessProbe"]) == f"http://127.0.0.1:{port}/health"
    assert probe_url(container["startupProbe"]) == f"http://127.0.0.1:{port}/health"
    # a native sidecar: started before the application, stopped after it
    assert container in pod()["spec"].get("initContainers", [])
    assert container["restartPolicy"] == "Always"
    app = pod()["spec"]["containers"][0]
    assert plain_env(app)["SIDETASK_URL"] == f"http://127.0.0.1:{port}"


def test_termination_grace_covers_the_drain() -> None:
    grace = drain_grace(plain_env(sidetask_container()))
    period = pod()["spec"]["terminationGracePeriodSeconds"]
    # requests get drain_grace, then running jobs get drain_grace, then 5 s before they are left
    assert 2 * grace + 5 <= period <= 2 * grace + 60


async def test_probe_commands_work_against_a_real_server(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory()
    container = sidetask_container()

    def run(probe: dict[str, Any]) -> int:
        command = [part.replace("8080", str(server.port)) for part in probe["exec"]["command"]]
        assert command[0] == "python"
        return subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, timeout=20
        ).returncode

    assert run(container["livenessProbe"]) != 0  # nothing answers yet
    await server.wait_ready()
    assert run(container["readinessProbe"]) == 0
    assert run(container["livenessProbe"]) == 0


# --- the container image ---


def instructions() -> list[tuple[str, str]]:
    """The Containerfile's instructions, continuation lines joined, comments left out."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Containerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
            pending = ""
    return result


def test_container_image_definition() -> None:
    steps = instructions()
    assert steps[0][0] == "FROM"
    known = {
        "FROM",
        "ENV",
        "WORKDIR",
        "COPY",
        "RUN",
        "VOLUME",
        "USER",
        "EXPOSE",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "CMD",
    }
    assert {word for word, _ in steps} <= known
    by_word: dict[str, list[str]] = {}
    for word, rest in steps:
        by_word.setdefault(word, []).append(rest)
    # what it copies exists in the repository
    for rest in by_word["COPY"]:
        *sources, _ = rest.split()
        assert all((ROOT / s).exists() for s in sources), sources
    env: dict[str, str] = {}
    for rest in by_word["ENV"]:
        for pair in rest.split():
            name, _, value = pair.partition("=")
            env[name] = value
    settings = config.load(env={k: v for k, v in env.items() if k.startswith("SIDETASK_")})
    assert by_word["VOLUME"] == [str(Path(settings.db).parent)]
    assert by_word["EXPOSE"] == [str(settings.port)]
    assert by_word["USER"][-1].split(":")[0] not in ("root", "0")
    assert by_word["STOPSIGNAL"] == ["SIGTERM"]
    assert by_word["ENTRYPOINT"] == ['["sidetask"]'] and by_word["CMD"] == ['["serve"]']
    assert (
        f"{settings.port}" in by_word["HEALTHCHECK"][0] and "/health" in by_word["HEALTHCHECK"][0]
    )
    # the image runs the replicas' manifest too: PostgreSQL's driver is in it
    (install,) = [rest for rest in by_word["RUN"] if "pip install" in rest]
    assert re.search(r"\[[^]]*\bpostgres\b[^]]*\]", install), install


# --- several replicas on PostgreSQL ---


def replicas_manifest() -> list[dict[str, Any]]:
    text = (DEPLOY / "sidetask-replicas.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_the_replicas_manifest_is_a_deployment_behind_a_service() -> None:
    docs = {doc["kind"]: doc for doc in replicas_manifest()}
    assert sorted(docs) == ["Deployment", "Service"]
    deployment, service = docs["Deployment"], docs["Service"]
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # no volume for a database: the state is in PostgreSQL, whose URL is a secret
    assert "persistentVolumeClaim" not in str(deployment)
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["SIDETASK_DB"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert "postgresql://" not in str(deployment)  # no URL (nor password) in the file


def test_the_replicas_settings_are_real_and_load() -> None:
    (deployment,) = [d for d in replicas_manifest() if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = plain_env(container)
    names = {e["name"] for e in container["env"]}
    secrets = {  # what the secrets and the field reference stand for
        "SIDETASK_DB": "postgresql://sidetask:pw@postgres.db.svc:5432/sidetask",
        "SIDETASK_TOKENS": '{"app": "sha256$' + "0" * 64 + '"}',
        "SIDETASK_SERVER_NAME": "sidetask-abc12",
    }
    settings = config.load(env={**env, **secrets})
    fields = {f"SIDETASK_{name.upper()}" for name in vars(settings)}
    assert names <= fields, f"not settings: {names - fields}"
    # reached through the Service: bound to every address, with credentials and names
    assert settings.host == "0.0.0.0" and settings.auth_enabled
    assert "sidetask.jobs.svc" in settings.allowed_hosts
    assert settings.replica_timeout > settings.heartbeat_interval
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 2 * drain_grace(env) + 5
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}


# --- the systemd unit ---


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "sidetask.service").read_text())
    return parser


def test_systemd_unit_settings() -> None:
    service = unit()["Service"]
    assert service["ExecStart"].split()[1:3] == ["serve", "--config"]
    env: dict[str, str] = {}
    for line in (DEPLOY / "sidetask.service").read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    settings = config.load(env=env)
    assert Path(settings.db).parent == Path("/var/lib") / service["StateDirectory"]
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) >= 2 * drain_grace(env) + 5
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify wants the program to exist: the venv's sidetask becomes a program that does
    text = (DEPLOY / "sidetask.service").read_text()
    true = shutil.which("true")
    assert true and "/opt/sidetask/venv/bin/sidetask" in text
    copy = tmp_path / "sidetask.service"
    copy.write_text(text.replace("/opt/sidetask/venv/bin/sidetask", true))
    ran = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )  # fmt: skip
    complaints = [line for line in (ran.stdout + ran.stderr).splitlines() if str(copy) in line]
    assert ran.returncode == 0 and not complaints, ran.stdout + ran.stderr

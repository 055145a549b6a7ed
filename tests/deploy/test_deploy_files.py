"""Static checks of deploy/: no Docker engine or cluster here, so every file is parsed and validated.

Kubernetes objects are checked against the official OpenAPI schemas shipped by ``kubernetes-validate``
(skipped, with a reason, when it is not installed); rolegate configs against rolegate's own schema.
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest
import yaml

from rolegate.config import load_config_text

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30"
SECRET_ENV = {
    "ROLEGATE_DB_PASSWORD": "pw",
    "ROLEGATE_OIDC_SECRET": "oidc",
    "LDAP_PASSWORD": "ldap",
    "ROLEGATE_OIDC_ISSUER": "https://sso.example.com",
}


def load_rolegate_config(text: str, tmp_path: Path, secret_dir: str):
    """Validate a deploy config the way rolegate will read it, with secret files moved under tmp_path."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in re.findall(re.escape(secret_dir) + r"/([\w.-]+)", text):
        (secrets / name).write_text("x" * 64)
    return load_config_text(text.replace(secret_dir, str(secrets)), file="deploy", env=SECRET_ENV)


# -- Kubernetes ----------------------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def by_kind(kind: str) -> dict:
    found = [doc for _, doc in k8s_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def test_k8s_has_every_required_kind() -> None:
    kinds = {doc["kind"] for _, doc in k8s_documents()}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Kustomization",
    } <= kinds


@pytest.mark.parametrize(
    "name,doc",
    [d for d in k8s_documents() if d[1]["kind"] != "Kustomization"],
    ids=lambda v: v if isinstance(v, str) else v.get("kind"),
)
def test_k8s_objects_match_the_kubernetes_schema(name: str, doc: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # strict: unknown fields are errors


def test_kustomization_lists_every_manifest() -> None:
    kustomization = by_kind("Kustomization")
    manifests = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_deployment_wiring() -> None:
    deployment = by_kind("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "internal"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "internal"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The ConfigMap's config must listen where the probes and Service look.
    config = yaml.safe_load(by_kind("ConfigMap")["data"]["config.yaml"])
    assert config["server"]["internal_listen"].endswith(f":{ports['internal']}")
    assert config["server"]["listen"].endswith(f":{ports['http']}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/rolegate" and container["args"][-1] == "/etc/rolegate/config.yaml"
    assert pod["terminationGracePeriodSeconds"] > 10  # > server.drain_timeout
    init = {c["name"]: c for c in pod["initContainers"]}
    assert init["migrate"]["args"][0] == "migrate"
    # Every secret the config names comes from the Secret.
    secret_keys = set(by_kind("Secret")["stringData"])
    assert set(re.findall(r"\$\{([A-Z_]+)\}", by_kind("ConfigMap")["data"]["config.yaml"])) <= secret_keys


def test_service_pdb_and_hpa_select_the_deployment() -> None:
    labels = by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert by_kind("Service")["spec"]["selector"].items() <= labels.items()
    assert by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = by_kind("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", by_kind("Deployment")["metadata"]["name"])
    assert by_kind("HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    # The internal port is not published by the Service.
    assert [p["targetPort"] for p in by_kind("Service")["spec"]["ports"]] == ["http"]


def test_configmap_holds_a_valid_rolegate_config(tmp_path: Path) -> None:
    text = by_kind("ConfigMap")["data"]["config.yaml"]
    config = load_rolegate_config(text, tmp_path, "/run/secrets/rolegate")
    assert config.storage.is_postgres and config.storage.cache_url
    assert config.server.internal_listen is not None


# -- Compose -------------------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


def test_compose_services_and_order() -> None:
    services = compose()["services"]
    assert {"rolegate", "migrate", "postgres", "redis", "openldap"} <= set(services)
    rolegate = services["rolegate"]
    assert rolegate["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"][0] == "migrate"
    assert rolegate["command"] == ["serve", "-c", "/etc/rolegate/config.yaml"]
    assert (DEPLOY / "compose" / rolegate["build"]["context"] / rolegate["build"]["dockerfile"]).is_file()
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
    for secret in compose()["secrets"].values():
        assert not Path(secret["file"]).is_absolute()


def test_compose_config_is_a_valid_rolegate_config(tmp_path: Path) -> None:
    rolegate = compose()["services"]["rolegate"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in rolegate["volumes"]}
    text = (DEPLOY / "compose" / mounted["/etc/rolegate/config.yaml"]).read_text()
    config = load_rolegate_config(text, tmp_path, "/run/secrets")
    # Hosts in the config are compose service names.
    assert "@postgres:" in config.storage.url and "//redis:" in config.storage.cache_url
    assert config.directory.url.startswith("ldap://openldap")
    # Every ${VAR} the config reads is passed to the container.
    assert set(re.findall(r"\$\{([A-Z_]+)\}", text)) <= set(rolegate["environment"])
    example = (DEPLOY / "compose" / ".env.example").read_text()
    assert set(rolegate["environment"]) <= set(re.findall(r"^([A-Z_]+)=", example, re.M))


# -- Dockerfile ----------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last stage, continuation lines joined, comments dropped."""
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if not stages:  # ARG before the first FROM (the base image)
            continue
        stages[-1].append((instruction.upper(), args.strip()))
    return stages[-1]


def test_dockerfile_lint() -> None:
    final = dockerfile_instructions()
    instructions = [i for i, _ in final]
    # The base is a build argument (a local base where no registry is reachable), python:3.11-slim by default.
    assert instructions[0] == "FROM" and final[0][1] == "${BASE}"
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text.split("\nFROM ")[0], re.M)
    users = [args for i, args in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthcheck = [args for i, args in final if i == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and "/readyz" in healthcheck[0]  # healthy: serving (tests/deploy/test_image.py)
    cmd = dict(final)
    assert "rolegate" in cmd["ENTRYPOINT"] and "/etc/rolegate/config.yaml" in cmd["CMD"]
    assert instructions.index("USER") > max(i for i, ins in enumerate(instructions) if ins == "RUN")
    for instruction, args in final:
        assert instruction != "ADD" or not args.startswith("http"), "fetch with a checksum, not ADD URL"
        if instruction == "RUN":
            assert "--no-cache-dir" in args or "pip" not in args


# -- systemd -------------------------------------------------------------------------------------------------


def test_systemd_unit_is_hardened() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "systemd" / "rolegate.service")
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    service = parser["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[1:] == ["serve", "-c", "/etc/rolegate/config.yaml"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    assert service["ProtectSystem"] == "strict"
    assert "/var/lib/rolegate" in service["ReadWritePaths"].split()
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "RestrictNamespaces"):
        assert service[key] == "yes", key
    assert service["CapabilityBoundingSet"] == ""
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    import shutil
    import subprocess

    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: run scripts/setup.sh (Debian package systemd)"
    # verify checks that executables exist; point them at one that does.
    unit = tmp_path / "rolegate.service"
    unit.write_text(
        (DEPLOY / "systemd" / "rolegate.service").read_text().replace("/usr/local/bin/rolegate", "/bin/true")
    )
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "rolegate.service" not in result.stderr, result.stderr

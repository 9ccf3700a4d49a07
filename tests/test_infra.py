"""The deployment files validate offline: Kubernetes core kinds against the API schemas, KubeRay kinds
by their required fields, the Dockerfile by its parse and its install step, and every `curate`
command they call exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from dockerfile_parse import DockerfileParser

from curation.cli import main
from curation.config import load_config

INFRA = Path(__file__).resolve().parent.parent / "infra"
README = INFRA.parent / "README.md"
K8S_VERSION = "1.30.0"
KUBERAY_KINDS = {"RayCluster", "RayJob"}


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / name).read_text()) if d]


def all_documents() -> list[dict]:
    return [
        d
        for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kubernetes-cronjob.yaml")
        for d in documents(name)
    ]


def test_core_kinds_validate_against_the_kubernetes_schemas():
    core = [d for d in all_documents() if d["kind"] not in KUBERAY_KINDS]
    assert {d["kind"] for d in core} >= {"CronJob", "ConfigMap"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema error


def test_a_broken_manifest_is_caught():
    cronjob = next(d for d in documents("kubernetes-cronjob.yaml") if d["kind"] == "CronJob")
    cronjob["spec"]["concurrencyPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)


def _check_ray_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    _check_pod(head["template"])
    groups = spec["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} == {"cpu-decode", "gpu-embed"}
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # KubeRay wants strings
        _check_pod(group["template"])
    gpu = next(g for g in groups if g["groupName"] == "gpu-embed")
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"] == "1"
    assert spec.get("enableInTreeAutoscaling") is True


def _check_pod(template: dict) -> None:
    containers = template["spec"]["containers"]
    assert containers
    for container in containers:
        assert container["name"] and container["image"]
        resources = container["resources"]
        assert resources["requests"] and resources["limits"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"]  # no memory overcommit


def test_kuberay_kinds_have_their_required_fields():
    docs = {d["kind"]: d for d in all_documents() if d["kind"] in KUBERAY_KINDS}
    assert set(docs) == KUBERAY_KINDS
    for doc in docs.values():
        assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    _check_ray_cluster_spec(docs["RayCluster"]["spec"])
    job = docs["RayJob"]["spec"]
    _check_ray_cluster_spec(job["rayClusterSpec"])
    assert job["entrypoint"].startswith("curate run ") and job["shutdownAfterJobFinishes"] is True


def _curate_commands() -> list[list[str]]:
    """Every `curate ...` command line in the manifests (shell variables and $(...) left as words)."""
    texts = [d["spec"]["entrypoint"] for d in all_documents() if d["kind"] == "RayJob"]
    for doc in all_documents():
        if doc["kind"] == "CronJob":
            for container in doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
                texts += container.get("args", [])
    found = []
    for text in texts:
        text = re.sub(r"\$\([^)]*\)", "X", text)
        words = shlex.split(text)
        found.append(words[words.index("curate") + 1 :])
    return found


def test_the_commands_the_manifests_run_exist_with_those_options():
    commands = _curate_commands()
    assert {c[0] for c in commands} == {"run", "refresh"}
    for words in commands:
        command = main.commands[words[0]]
        given = {w.split("=")[0] for w in words if w.startswith("--")}
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert given <= known, (words[0], given - known)
        assert CliRunner().invoke(main, [words[0], "--help"]).exit_code == 0


def test_the_configmap_holds_a_valid_pipeline(tmp_path):
    configmap = next(d for d in documents("kubernetes-cronjob.yaml") if d["kind"] == "ConfigMap")
    for name, text in configmap["data"].items():
        path = tmp_path / name
        path.write_text(text)
        load_config(path)  # raises a UserError naming the key on any mistake


def test_the_dockerfile_installs_what_the_readme_installs():
    parser = DockerfileParser(path=str(INFRA / "Dockerfile"))
    instructions = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    assert instructions[0]["instruction"] == "ARG" and instructions[1]["value"] == "${BASE}"
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    readme_install = re.search(r"```bash\n(.+?) && curate demo", README.read_text()).group(1)
    assert readme_install in runs  # the very same command
    assert any(i["instruction"] == "USER" and i["value"] != "root" for i in instructions)
    assert '"curate"' in next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT")
    assert not any(re.search(r"huggingface|hf_hub_download|wget|curl", r) for r in runs)  # no weights fetched

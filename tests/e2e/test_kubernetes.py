"""deploy/kubernetes, checked offline: rendered by kustomize (the ``kubectl`` of the dev extra),
validated against the Kubernetes API schemas of the stated versions, scanned by checkov, and
its resource figures held against the image measured under its worst case."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from ocr_testing import container_utils
from ocr_testing.server_utils import REPO, digit_png

DEPLOY = REPO / "deploy" / "kubernetes"
OVERLAY = DEPLOY / "overlays" / "prometheus-operator"
#: the oldest Kubernetes release the manifests are stated for, and the newest schema shipped
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
TOOLS = Path(sys.executable).parent


def _render(path: Path) -> list[dict]:
    out = subprocess.run([str(TOOLS / "kubectl"), "kustomize", str(path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def base() -> dict[str, dict]:
    """The rendered base by kind (one object of each)."""
    objects = _render(DEPLOY)
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects)
    return by_kind


def _container(base: dict[str, dict]) -> dict:
    (container,) = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _quantity(value: str) -> float:
    """A Kubernetes quantity (``384Mi``, ``1Gi``, ``500m``, ``2``) as a plain number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units[unit]


def test_every_object_validates_against_the_stated_kubernetes_versions(base):
    overlay = _render(OVERLAY)
    assert {obj["kind"] for obj in overlay} == set(base) | {"ServiceMonitor"}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "Secret"} <= set(base)  # fmt: skip
    for version in KUBERNETES_VERSIONS:
        for obj in overlay:
            if obj["kind"] != "ServiceMonitor":  # a CRD: no schema in Kubernetes itself
                kubernetes_validate.validate(obj, version, strict=True)


def test_servicemonitor_scrapes_the_service_metrics_port(base):
    (monitor,) = [obj for obj in _render(OVERLAY) if obj["kind"] == "ServiceMonitor"]
    service = base["Service"]
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_rollouts_keep_capacity_and_stopping_pods_drain(base):
    deployment = base["Deployment"]
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    container = _container(base)
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    settings = base["ConfigMap"]["data"]
    drain = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > drain + int(settings["OCR_GRACEFUL_TIMEOUT"])
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in spread
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert base["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert base["Service"]["spec"]["selector"] == selector
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert base["Service"]["spec"]["ports"][0]["targetPort"] in ports
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(scrape["prometheus.io/port"]) == ports["http"]


def test_autoscaler_scales_the_deployment_on_cpu_and_slowly_down(base):
    hpa = base["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == base["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_pod_runs_as_the_images_user_read_only_with_scratch_space_where_it_writes(base):
    pod = base["Deployment"]["spec"]["template"]["spec"]
    container = _container(base)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"--uid {pod['securityContext']['runAsUser']} " in dockerfile
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", "/dev/shm"):  # tempfile, gunicorn heartbeats, Prometheus samples
        assert "emptyDir" in volumes[mounts[path]], path
    assert pod["automountServiceAccountToken"] is False
    assert container["envFrom"][0]["configMapRef"]["name"] == base["ConfigMap"]["metadata"]["name"]
    assert base["Secret"]["stringData"]["OCR_ADMIN_TOKEN"] == "", "no token in the repository"


def test_image_tag_names_the_model_baked_into_the_image():
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    shipped = json.loads((REPO / "models" / "default.json").read_text())["version"]
    assert image["newTag"].endswith(f"-model-{shipped}"), "retag the image with the new model"


def test_policy_scan_finds_nothing_unjustified(tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(_render(OVERLAY)))
    result = subprocess.run(
        [str(TOOLS / "checkov"), "--file", str(rendered), "--framework", "kubernetes",
         "--skip-download", "--output", "json", "--compact", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout[result.stdout.index("{"):])
    summary = report["summary"]
    print(f"\ncheckov {summary['checkov_version']}: {summary['passed']} passed, "
          f"{summary['failed']} failed, {summary['skipped']} skipped (justified in place)")
    assert summary["failed"] == 0, json.dumps(report["results"]["failed_checks"], indent=1)
    assert summary["parsing_errors"] == 0 and summary["passed"] > 50
    annotations = [obj["metadata"].get("annotations", {}) for obj in _render(OVERLAY)]
    skips = {k: v for notes in annotations for k, v in notes.items() if k.startswith("checkov.io/")}
    assert len(skips) == summary["skipped"]
    for reason in skips.values():
        check, _, why = reason.partition("=")
        assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(why.split()) >= 8, reason


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.container
def test_resources_hold_the_image_measured_at_its_worst_case(base):
    """The pod's requests and limits against the image run with the ConfigMap's settings:
    idle memory within the request, and every worker thread reading a largest allowed
    image at once within the limit."""
    reason = container_utils.engine_missing()
    if reason:
        pytest.skip(reason)
    container_utils.built_image()
    settings = dict(base["ConfigMap"]["data"])
    resources = _container(base)["resources"]
    workers, threads = int(settings["OCR_WORKERS"]), int(settings["OCR_THREADS"])
    assert workers <= _quantity(resources["limits"]["cpu"]), "a worker per CPU of the limit"
    with container_utils.running_container("ocr-test-resources", env=settings) as box:
        post = requests.Session().post
        for _ in range(200):  # warm both workers on ordinary uploads
            post(box.url + "/v1/predict", data=digit_png("1", size=28),
                 headers={"Content-Type": "image/png"}, timeout=10)  # fmt: skip
        pids = box.pids()
        pss = sum(_smaps_pss(pid) for pid in pids)
        side = int(int(settings["OCR_MAX_PIXELS"]) ** 0.5)
        body = digit_png("1", size=side)
        statuses: list[int] = []

        def upload() -> None:
            statuses.append(post(box.url + "/v1/predict", data=body, timeout=120,
                                 headers={"Content-Type": "image/png"}).status_code)  # fmt: skip

        clients = [threading.Thread(target=upload) for _ in range(workers * threads)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert statuses == [200] * len(clients)
        peak = sum(int(container_utils.proc_status(pid, "VmHWM").split()[0]) * 1024
                   for pid in pids)  # fmt: skip
        after = sum(_smaps_pss(pid) for pid in pids)  # what the workers' heaps keep
    print(f"\npod memory: {pss / 2**20:.0f} MiB PSS warm and idle, {after / 2**20:.0f} MiB after "
          f"{len(clients)} uploads of {side}x{side} at once (request "
          f"{resources['requests']['memory']}); peak RSS summed over processes "
          f"{peak / 2**20:.0f} MiB (limit {resources['limits']['memory']})")  # fmt: skip
    assert pss < after < _quantity(resources["requests"]["memory"])
    assert peak < _quantity(resources["limits"]["memory"])


def _smaps_pss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise KeyError("Pss")

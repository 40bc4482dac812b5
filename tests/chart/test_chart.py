"""The Helm chart and the plain manifests: rendered with real Helm (helm-python-sdk), linted,
and every object validated against Kubernetes' own schemas (kubernetes-validate, strict) or,
for ConfluxCluster, against the openAPIV3Schema of the CRD the operator generates.

Run from the repository root:
    /var/cache/conflux-venv/bin/python -m pytest tests/chart -q
"""

import copy
import pathlib

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from render_manifests import render_manifests

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conflux-operator"
MANIFESTS = ROOT / "manifests"
KUBERNETES_VERSION = "1.33"
# Kinds whose schema Kubernetes does not ship; checked by their own tests below.
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}

VALUE_SETS = {
    "defaults": {},
    "everything-on": {
        "exampleCluster": {"enabled": True, "replicas": 5, "storage": {"size": "10Gi", "storageClassName": "fast"}},
        "metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                    "podMonitor": {"enabled": True, "interval": "15s"}},
        "logJson": True,
        "logLevel": "debug,kube=info",
    },
    "existing-service-account": {
        "serviceAccount": {"create": False, "name": "ops-operator"},
        "image": {"repository": "registry.example/conflux-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    },
    "hibernated-example-retaining-volumes": {
        "exampleCluster": {"enabled": True, "name": "sleepy", "replicas": 0,
                           "storage": {"size": "500Mi", "reclaimPolicy": "Retain"}},
    },
}


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def crd(kind: str = "ConfluxCluster") -> dict:
    [definition] = [d for d in documents((MANIFESTS / "crd.yaml").read_text()) if d["spec"]["names"]["kind"] == kind]
    return definition


def cluster_schema() -> dict:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def validate_cluster(obj: dict) -> None:
    jsonschema.Draft7Validator(cluster_schema()).validate(obj)


def validate(obj: dict) -> None:
    """Validates one object; raises on any problem."""
    if obj["kind"] == "ConfluxCluster":
        assert obj["apiVersion"] == "conflux.io/v1alpha1"
        validate_cluster(obj)
    elif obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["metadata"]["name"] and obj["spec"]["selector"]["matchLabels"]
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name="conflux-operator", namespace="conflux-system", is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects.extend(documents(text))
    return objects


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_clean(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace="conflux-system")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid(name):
    objects = render(VALUE_SETS[name])
    assert objects
    for obj in objects:
        validate(obj)


def test_default_render_is_the_operator_and_its_least_privilege_rbac():
    kinds = sorted(obj["kind"] for obj in render({}))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]


def test_optional_objects_follow_their_values():
    kinds = sorted(obj["kind"] for obj in render(VALUE_SETS["everything-on"]))
    assert kinds.count("ConfluxCluster") == 1
    assert "ServiceMonitor" in kinds and "PodMonitor" in kinds
    kinds = [obj["kind"] for obj in render(VALUE_SETS["existing-service-account"])]
    assert "ServiceAccount" not in kinds


def test_rbac_names_every_verb_and_resource_without_wildcards():
    [role] = [obj for obj in render({}) if obj["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    # What the reconcile loop does: SSA of owned objects, status patches, pod/claim deletion.
    for needed in [("conflux.io", "confluxclusters", "watch"), ("conflux.io", "confluxclusters/status", "patch"),
                   ("apps", "statefulsets", "patch"), ("", "pods", "delete"),
                   ("", "persistentvolumeclaims", "delete"), ("", "secrets", "create"),
                   ("policy", "poddisruptionbudgets", "patch"), ("events.k8s.io", "events", "create"),
                   ("conflux.io", "confluxbackups", "watch"), ("conflux.io", "confluxbackups", "create"),
                   ("conflux.io", "confluxbackups", "delete"), ("conflux.io", "confluxbackups/status", "patch"),
                   ("conflux.io", "confluxclusters", "patch")]:
        assert needed in granted, needed
    assert ("", "secrets", "list") not in granted, "the operator never lists secrets"


def test_operator_runs_as_one_non_root_replica_with_a_read_only_root():
    [deployment] = [obj for obj in render({}) if obj["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["args"] == ["run"]


@pytest.mark.parametrize("values", [
    {"exampleCluster": {"enabled": True, "replicas": -1}},
    {"exampleCluster": {"enabled": True, "storage": {"size": "lots"}}},
    {"metrics": {"port": 0}},
    {"image": {"pullPolicy": "Sometimes"}},
    {"replicaCount": 2},
])
def test_values_schema_refuses_bad_values(values):
    with pytest.raises(helm.HelmError):
        render(values)


def test_chart_crds_are_the_generated_crds():
    chart_crds = sorted(c["name"] for c in helm.Chart.load(CHART).crds)
    assert chart_crds == ["crds/confluxbackups.conflux.io.yaml", "crds/confluxclusters.conflux.io.yaml"]
    for name, kind in [(chart_crds[0], "ConfluxBackup"), (chart_crds[1], "ConfluxCluster")]:
        [chart_crd] = documents((CHART / name).read_text())
        assert chart_crd == crd(kind)


def test_plain_manifests_equal_the_rendered_chart():
    for filename, text in render_manifests().items():
        assert (MANIFESTS / filename).read_text() == text, "regenerate with tests/chart/render_manifests.py"


def test_every_manifest_is_valid():
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert {f.relative_to(MANIFESTS).as_posix() for f in files} >= {
        "crd.yaml", "rbac.yaml", "operator.yaml", "examples/conflux-cluster.yaml"}
    for path in files:
        objects = documents(path.read_text())
        assert objects, path
        for obj in objects:
            validate(obj)


def test_crd_offers_scale_and_status_subresources_and_printer_columns():
    version = crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Replicas", "Ready", "Leader", "Phase", "Age"]


def test_backup_crd_is_namespaced_with_status_and_printer_columns():
    backup = crd("ConfluxBackup")
    assert backup["spec"]["scope"] == "Namespaced" and backup["spec"]["names"]["shortNames"] == ["cfxbackup"]
    version = backup["spec"]["versions"][0]
    assert "status" in version["subresources"]
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Cluster", "Phase", "Revision", "Size", "Age"]


def test_example_cluster_validates_against_the_crd_schema_and_bad_ones_do_not():
    [example] = documents((MANIFESTS / "examples" / "conflux-cluster.yaml").read_text())
    validate_cluster(example)
    for mutate in [
        lambda c: c["spec"].update(replicas=-1),
        lambda c: c["spec"].pop("storage"),
        lambda c: c["spec"]["storage"].update(reclaimPolicy="Shred"),
        lambda c: c["spec"].update(replicas="three"),
        lambda c: c["spec"].update(version=""),
    ]:
        broken = copy.deepcopy(example)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_cluster(broken)


def test_kubernetes_validation_refuses_a_broken_object():
    """Guards the meaning of the validation above: strict schemas do refuse mistakes."""
    [deployment] = [obj for obj in render({}) if obj["kind"] == "Deployment"]
    for mutate in [
        lambda d: d["spec"].update(replicas="one"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
    ]:
        broken = copy.deepcopy(deployment)
        mutate(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)

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
        "backupVolume": {"claimName": "conflux-backups", "mountPath": "/var/backups/conflux"},
    },
    "namespaced": {
        "watchNamespaces": ["team-a", "team-b"],
        "networkPolicy": {"enabled": True, "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    },
    "all-namespaces-with-cluster-namespaces": {
        "clusterNamespaces": ["team-a", "conflux-system"],
        "networkPolicy": {"enabled": False},
        "exampleCluster": {"enabled": True, "antiAffinity": "Required", "tlsMode": "Disabled",
                           "storage": {"size": "1Gi", "deleteVolumesWithCluster": True}},
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
    # Two Roles in the release namespace: Secrets and volumes, and the leader-election Lease.
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy", "Role", "Role",
                     "RoleBinding", "RoleBinding", "Service", "ServiceAccount"]


def rules_of(objects: list[dict], kind: str) -> set[tuple[str, str, str, str]]:
    """(namespace or '', apiGroup, resource, verb) for every rule of every object of a kind."""
    return {(obj["metadata"].get("namespace", ""), group, resource, verb)
            for obj in objects if obj["kind"] == kind for rule in obj["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


def bound_to_the_operator(objects: list[dict], kind: str, binding_kind: str) -> None:
    for role in (obj for obj in objects if obj["kind"] == kind):
        [binding] = [b for b in objects if b["kind"] == binding_kind and b["roleRef"]["name"] == role["metadata"]["name"]
                     and b["metadata"].get("namespace") == role["metadata"].get("namespace")]
        assert binding["roleRef"]["kind"] == kind
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "conflux-operator",
                                        "namespace": "conflux-system"}]


def test_default_rbac_has_no_cluster_scoped_rule_on_secrets_or_volume_deletion():
    objects = render({})
    cluster_wide = rules_of(objects, "ClusterRole")
    assert cluster_wide, "all namespaces are watched cluster-wide"
    assert not [rule for rule in cluster_wide if rule[2] == "secrets"], "no cluster-wide Secret access"
    assert not [rule for rule in cluster_wide if rule[2] == "persistentvolumeclaims" and rule[3] != "list"], \
        "cluster-wide, volumes are only listed"
    assert ("", "", "persistentvolumeclaims", "list") in cluster_wide
    namespaced = rules_of(objects, "Role")
    for verb in ("get", "create", "patch"):
        assert ("conflux-system", "", "secrets", verb) in namespaced
    for verb in ("patch", "delete"):
        assert ("conflux-system", "", "persistentvolumeclaims", verb) in namespaced
    assert {rule[0] for rule in namespaced} == {"conflux-system"}
    bound_to_the_operator(objects, "ClusterRole", "ClusterRoleBinding")
    bound_to_the_operator(objects, "Role", "RoleBinding")
    [deployment] = [obj for obj in objects if obj["kind"] == "Deployment"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CONFLUX_OPERATOR_WATCH_NAMESPACES"]["value"] == ""


def test_cluster_namespaces_get_the_secret_and_volume_role_in_all_namespaces_mode():
    objects = render(VALUE_SETS["all-namespaces-with-cluster-namespaces"])
    namespaced = rules_of(objects, "Role")
    assert {rule[0] for rule in namespaced} == {"conflux-system", "team-a"}
    assert ("team-a", "", "secrets", "get") in namespaced
    assert not [rule for rule in rules_of(objects, "ClusterRole") if rule[2] == "secrets"]


def test_watched_namespaces_get_a_role_each_and_nothing_is_cluster_wide():
    objects = render(VALUE_SETS["namespaced"])
    kinds = [obj["kind"] for obj in objects]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    namespaced = {rule for rule in rules_of(objects, "Role") if rule[2] != "leases"}
    assert {rule[0] for rule in namespaced} == {"team-a", "team-b"}
    for namespace in ("team-a", "team-b"):
        for needed in [("conflux.io", "confluxclusters", "watch"), ("", "secrets", "get"),
                       ("", "persistentvolumeclaims", "delete"), ("apps", "statefulsets", "patch")]:
            assert (namespace, *needed) in namespaced, (namespace, needed)
    bound_to_the_operator(objects, "Role", "RoleBinding")
    [deployment] = [obj for obj in objects if obj["kind"] == "Deployment"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CONFLUX_OPERATOR_WATCH_NAMESPACES"]["value"] == "team-a,team-b"


def test_the_operator_tells_its_namespace_and_labels_for_the_clusters_network_policies():
    [deployment] = [obj for obj in render({}) if obj["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["CONFLUX_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    pairs = dict(pair.split("=") for pair in env["CONFLUX_OPERATOR_POD_LABELS"]["value"].split(","))
    assert pairs == pod["metadata"]["labels"], "the labels the operator's pods really carry"


def test_the_operators_network_policy_admits_only_its_metrics_port():
    [policy] = [obj for obj in render({}) if obj["kind"] == "NetworkPolicy"]
    [deployment] = [obj for obj in render({}) if obj["kind"] == "Deployment"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}] and "from" not in rule
    [policy] = [obj for obj in render(VALUE_SETS["namespaced"]) if obj["kind"] == "NetworkPolicy"]
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == VALUE_SETS["namespaced"]["networkPolicy"]["metricsFrom"]
    kinds = [obj["kind"] for obj in render(VALUE_SETS["all-namespaces-with-cluster-namespaces"])]
    assert "NetworkPolicy" not in kinds


def test_network_policy_validation_refuses_a_broken_policy():
    """Guards the meaning of the NetworkPolicy validation: kubernetes-validate knows the kind."""
    [policy] = [obj for obj in render({}) if obj["kind"] == "NetworkPolicy"]
    broken = copy.deepcopy(policy)
    broken["spec"]["ingress"][0]["ports"][0]["port"] = {"number": 8080}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    broken = copy.deepcopy(policy)
    broken["spec"]["policyTypes"] = "Ingress"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_example_cluster_spreads_members_across_nodes_by_default_and_the_mode_is_replaceable():
    [default] = [obj for obj in render({"exampleCluster": {"enabled": True}}) if obj["kind"] == "ConfluxCluster"]
    assert default["spec"]["scheduling"] == {"antiAffinity": "Preferred"}
    assert default["spec"]["storage"]["deleteVolumesWithCluster"] is False
    assert default["spec"]["tls"] == {"mode": "Auto"}, "the example cluster speaks TLS unless told not to"
    [required] = [obj for obj in render(VALUE_SETS["all-namespaces-with-cluster-namespaces"])
                  if obj["kind"] == "ConfluxCluster"]
    assert required["spec"]["scheduling"] == {"antiAffinity": "Required"}
    assert required["spec"]["storage"]["deleteVolumesWithCluster"] is True
    assert required["spec"]["tls"] == {"mode": "Disabled"}
    broken = copy.deepcopy(default)
    broken["spec"]["scheduling"]["antiAffinity"] = "Sometimes"
    with pytest.raises(jsonschema.ValidationError):
        validate_cluster(broken)


def test_optional_objects_follow_their_values():
    kinds = sorted(obj["kind"] for obj in render(VALUE_SETS["everything-on"]))
    assert kinds.count("ConfluxCluster") == 1
    assert "ServiceMonitor" in kinds and "PodMonitor" in kinds
    kinds = [obj["kind"] for obj in render(VALUE_SETS["existing-service-account"])]
    assert "ServiceAccount" not in kinds


def test_rbac_names_every_verb_and_resource_without_wildcards():
    objects = render({})
    for role in (obj for obj in objects if obj["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
    granted = {rule[1:] for rule in rules_of(objects, "ClusterRole") | rules_of(objects, "Role")}
    # What the reconcile loop does: SSA of owned objects, status patches, pod/claim deletion.
    for needed in [("conflux.io", "confluxclusters", "watch"), ("conflux.io", "confluxclusters/status", "patch"),
                   ("apps", "statefulsets", "patch"), ("", "pods", "delete"),
                   ("", "persistentvolumeclaims", "delete"), ("", "secrets", "create"),
                   ("policy", "poddisruptionbudgets", "patch"), ("events.k8s.io", "events", "create"),
                   ("", "secrets", "update"), ("cert-manager.io", "certificates", "patch"),
                   ("networking.k8s.io", "networkpolicies", "patch"), ("networking.k8s.io", "networkpolicies", "delete"),
                   ("conflux.io", "confluxbackups", "watch"), ("conflux.io", "confluxbackups", "create"),
                   ("conflux.io", "confluxbackups", "delete"), ("conflux.io", "confluxbackups/status", "patch"),
                   ("conflux.io", "confluxclusters", "patch")]:
        assert needed in granted, needed
    assert ("", "secrets", "list") not in granted, "the operator never lists secrets"


def test_operator_runs_as_two_non_root_replicas_with_a_read_only_root():
    [deployment] = [obj for obj in render({}) if obj["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["args"] == ["run"]


def test_a_backup_volume_claim_is_mounted_writable_only_when_named():
    def operator_pod(values):
        [deployment] = [obj for obj in render(values) if obj["kind"] == "Deployment"]
        return deployment["spec"]["template"]["spec"]

    plain = operator_pod({})
    assert "volumes" not in plain and "volumeMounts" not in plain["containers"][0]
    assert "fsGroup" not in plain["securityContext"]
    pod = operator_pod({"backupVolume": {"claimName": "conflux-backups", "mountPath": "/var/backups/conflux"}})
    assert pod["volumes"] == [{"name": "backups", "persistentVolumeClaim": {"claimName": "conflux-backups"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "backups", "mountPath": "/var/backups/conflux"}]
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("values", [
    {"backupVolume": {"claimName": "Not A Claim"}},
    {"backupVolume": {"claimName": "ok", "mountPath": "relative/path"}},
    {"exampleCluster": {"enabled": True, "replicas": -1}},
    {"exampleCluster": {"enabled": True, "storage": {"size": "lots"}}},
    {"exampleCluster": {"enabled": True, "tlsMode": "CertManager"}},
    {"metrics": {"port": 0}},
    {"image": {"pullPolicy": "Sometimes"}},
    {"replicaCount": 0},
    {"replicaCount": 2, "leaderElection": {"enabled": False}},
    {"leaderElection": {"leaseName": "Not A Name"}},
])
def test_values_schema_refuses_bad_values(values):
    with pytest.raises(helm.HelmError):
        render(values)


def test_replicas_elect_a_leader_on_a_lease_they_may_only_touch_in_their_namespace():
    objects = render({})
    [deployment] = [obj for obj in objects if obj["kind"] == "Deployment"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CONFLUX_OPERATOR_LEADER_ELECT"]["value"] == "true"
    assert env["CONFLUX_OPERATOR_LEASE_NAME"]["value"] == "conflux-operator"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    [role] = [obj for obj in objects if obj["kind"] == "Role"
              and any("leases" in rule["resources"] for rule in obj["rules"])]
    assert role["metadata"]["namespace"] == "conflux-system"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    [binding] = [obj for obj in objects if obj["kind"] == "RoleBinding"
                 and obj["roleRef"]["name"] == role["metadata"]["name"]]
    [cluster_role] = [obj for obj in objects if obj["kind"] == "ClusterRole"]
    assert all("leases" not in rule["resources"] for rule in cluster_role["rules"]), "no cluster-wide lease rights"
    single = render({"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert not [obj for obj in single if obj["kind"] == "Role"
                and any("leases" in rule["resources"] for rule in obj["rules"])], "no lease Role without election"
    [deployment] = [obj for obj in single if obj["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1


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

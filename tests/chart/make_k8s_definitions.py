"""Writes operator/tests/fixtures/k8s-definitions.json: the Kubernetes OpenAPI definitions the
operator's kube-fake-client tests validate against, cut from the strict JSON schemas that the
PyPI package `kubernetes-validate` ships (only the definitions reachable from the kinds the
operator reads or writes), with `$ref`s rewritten to the Swagger `#/definitions/` form the fake
client expects.

Run from the repository root after installing tests/chart/requirements.txt:
    python tests/chart/make_k8s_definitions.py
"""

import json
import pathlib
import re

import kubernetes_validate

KUBERNETES_VERSION = "1.33.0"
ROOTS = [
    "io.k8s.api.apps.v1.StatefulSet",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.PersistentVolumeClaim",
    "io.k8s.api.policy.v1.PodDisruptionBudget",
    "io.k8s.api.events.v1.Event",
    "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.networking.v1.NetworkPolicy",
]
OUTPUT = pathlib.Path(__file__).resolve().parents[2] / "operator/tests/fixtures/k8s-definitions.json"


def main() -> None:
    package = pathlib.Path(kubernetes_validate.__file__).parent
    source = package / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json"
    definitions = json.loads(source.read_text())["$defs"]
    wanted, queue = set(), list(ROOTS)
    while queue:
        name = queue.pop()
        if name in wanted:
            continue
        wanted.add(name)
        queue.extend(re.findall(r'"#/\$defs/([^"]+)"', json.dumps(definitions[name])))
    text = json.dumps({name: definitions[name] for name in sorted(wanted)}, sort_keys=True, indent=1)
    text = text.replace('"#/$defs/', '"#/definitions/')
    document = {
        "info": {"title": f"Kubernetes v{KUBERNETES_VERSION} (subset, strict)", "version": KUBERNETES_VERSION},
        "definitions": json.loads(text),
    }
    OUTPUT.write_text(json.dumps(document, sort_keys=True, indent=1) + "\n")
    print(f"wrote {len(wanted)} definitions to {OUTPUT}")


if __name__ == "__main__":
    main()

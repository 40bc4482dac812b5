"""Writes manifests/rbac.yaml and manifests/operator.yaml by rendering charts/conflux-operator
with its default values (release `conflux-operator` in namespace `conflux-system`), so the
plain manifests never drift from the chart. tests/chart/test_chart.py fails when they differ.

Run from the repository root:
    python tests/chart/render_manifests.py
"""

import pathlib

import helm_python as helm

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conflux-operator"
RELEASE = "conflux-operator"
NAMESPACE = "conflux-system"
HEADER = "# Generated from charts/conflux-operator by tests/chart/render_manifests.py. Do not edit.\n"
NAMESPACE_OBJECT = f"""---
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
"""
# Which rendered templates go into which manifest file.
FILES = {
    "rbac.yaml": ["serviceaccount.yaml", "rbac.yaml", "leader-election-rbac.yaml"],
    "operator.yaml": ["deployment.yaml", "service.yaml", "networkpolicy.yaml"],
}


def render_manifests() -> dict[str, str]:
    """The text each file under manifests/ must hold."""
    rendered = helm.Chart.load(CHART).render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    by_template = {path.rsplit("/", 1)[-1]: text for path, text in rendered.items()}
    out = {}
    for filename, templates in FILES.items():
        parts = [HEADER]
        if filename == "rbac.yaml":
            parts.append(NAMESPACE_OBJECT)
        for template in templates:
            for document in by_template[template].split("\n---\n"):
                document = document.strip("\n")
                if document.strip():
                    parts.append("---\n" + document + "\n")
        out[filename] = "".join(parts)
    return out


def main() -> None:
    for filename, text in render_manifests().items():
        (ROOT / "manifests" / filename).write_text(text)
        print(f"wrote manifests/{filename}")


if __name__ == "__main__":
    main()

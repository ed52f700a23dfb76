"""Render deploy/k8s (kustomize) and validate every resource offline against the Kubernetes JSON schemas
shipped in the `kubernetes-validate` package (strict: unknown fields are errors). `make k8s-check`.

    python deploy/k8s_check.py [--kubernetes-version 1.32] [--print]

Renders with `kubectl kustomize` when kubectl is installed; otherwise applies the kustomization's
`resources`, `namespace` and `images` itself (all this kustomization uses), so the check runs anywhere.
Exit 0 when every resource validates, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent / "k8s"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


def _render_here(directory: Path) -> list[dict]:
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kust.get("images", [])}
    docs: list[dict] = []
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((directory / name).read_text()):
            if not doc:
                continue
            if kust.get("namespace") and doc["kind"] not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = kust["namespace"]
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                img = images.get(c["image"])
                if img:
                    c["image"] = f"{img.get('newName', c['image'])}:{img['newTag']}" if "newTag" in img else \
                        img.get("newName", c["image"])
            docs.append(doc)
    return docs


def render(directory: Path = K8S) -> tuple[list[dict], str]:
    """The rendered resources and what rendered them ('kubectl kustomize' or 'built-in')."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"kubectl kustomize failed: {r.stderr.strip()}")
        return [d for d in yaml.safe_load_all(r.stdout) if d], "kubectl kustomize"
    return _render_here(directory), "built-in"


def validate(docs: list[dict], version: str = "1.32") -> list[str]:
    """Errors ('Kind/name: message'); empty when every resource validates (strict)."""
    import kubernetes_validate

    errors = []
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{what}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.VersionNotSupportedError) as e:
            errors.append(f"{what}: {e}")
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubernetes-version", default="1.32")
    p.add_argument("--print", action="store_true", help="print the rendered manifests")
    args = p.parse_args(argv)
    docs, how = render()
    if args.print:
        print(yaml.safe_dump_all(docs, sort_keys=False))
    errors = validate(docs, args.kubernetes_version)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    print(f"{len(docs)} resources rendered ({how}), {len(errors)} invalid against Kubernetes "
          f"{args.kubernetes_version} (strict): {kinds}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

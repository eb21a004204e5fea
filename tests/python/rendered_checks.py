"""Checks of an overlay as Kustomize renders it (`kubectl kustomize`), which
what kubernetes-validate reads file by file cannot see
(tests/deploy.rs runs this with the tests' virtualenv, which has PyYAML):

- every resource of the base and the overlay is there, once, and every
  namespaced one is in the namespace the overlay names;
- the streamd StatefulSet is the base's with the overlay's patch merged:
  every variable of both (the patch's value where both set one), each
  `$(VAR)` a value refers to defined before it, the base's probes,
  preStop, security context, mounts, pod volumes and claim templates kept
  where the patch does not set them, the overlay's resources;
- the image is the one the overlay's `images` names;
- every Secret and ConfigMap a workload reads is rendered, or is one the
  overlay's comment says to create out of band (streamd-secrets).

usage: python rendered_checks.py REPO OVERLAY RENDERED_YAML
Prints one line per check and exits 1 on any failure.
"""

import pathlib
import re
import sys

import yaml

repo = pathlib.Path(sys.argv[1])
overlay = repo / "k8s/overlays" / sys.argv[2]
rendered = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[3]).read_text()) if d]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + f"{overlay.name}: {what}")
    if not ok:
        failures.append(what)


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(kdir):
    return yaml.safe_load((kdir / "kustomization.yaml").read_text())


def sources(kdir):
    """The documents of a kustomization's resource files, recursively."""
    out = []
    for r in kustomization(kdir).get("resources", []):
        p = (kdir / r).resolve()
        out += sources(p) if p.is_dir() else docs(p)
    return out


k = kustomization(overlay)
namespace = k["namespace"]
ids = [(d["kind"], d["metadata"]["name"]) for d in rendered]
expected = {(d["kind"], d["metadata"]["name"]) for d in sources(overlay)}
expected |= {("Secret", g["name"]) for g in k.get("secretGenerator", [])}
check(len(ids) == len(set(ids)), f"no resource twice: {sorted(ids)}")
check(set(ids) == expected, f"the resources are the base's and the overlay's: {sorted(set(ids) ^ expected)} differ")
cluster_scoped = {"Namespace"}
for d in rendered:
    if d["kind"] in cluster_scoped:
        continue
    check(d["metadata"].get("namespace") == namespace, f"{d['kind']}/{d['metadata']['name']} in namespace {namespace}")


def one(kind, name, among):
    found = [d for d in among if d["kind"] == kind and d["metadata"]["name"] == name]
    return found[0] if len(found) == 1 else None


sts = one("StatefulSet", "streamd", rendered)
check(sts is not None, "the streamd StatefulSet is rendered")
base = one("StatefulSet", "streamd", docs(repo / "k8s/base/statefulset.yaml"))
patch = one("StatefulSet", "streamd", docs(overlay / "statefulset.yaml"))
check(base is not None and patch is not None, "the base's StatefulSet and the overlay's patch of it are found")
if sts and base and patch:
    c = sts["spec"]["template"]["spec"]["containers"][0]
    bc = base["spec"]["template"]["spec"]["containers"][0]
    pc = patch["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    want = {e["name"]: e for e in bc.get("env", [])}
    want.update({e["name"]: e for e in pc.get("env", [])})
    check(set(env) == set(want), f"the variables are the base's and the patch's: {sorted(set(env) ^ set(want))} differ")
    for name, e in want.items():
        check(env.get(name) == e, f"{name} as the {'patch' if name in {x['name'] for x in pc.get('env', [])} else 'base'} sets it")
    # Kubernetes expands $(VAR) only from variables listed before it.
    names = [e["name"] for e in c.get("env", [])]
    for i, e in enumerate(c.get("env", [])):
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
            check(ref in names[:i], f"{e['name']}'s $({ref}) is defined before it")
    for key in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "volumeMounts", "securityContext"):
        if key in bc and key not in pc:
            check(c.get(key) == bc[key], f"the base's container {key} kept")
    pod, base_pod, patch_pod = (x["spec"]["template"]["spec"] for x in (sts, base, patch))
    for key in ("volumes", "securityContext"):
        if key in base_pod and key not in patch_pod:
            check(pod.get(key) == base_pod[key], f"the base's pod {key} kept")
    if "volumeClaimTemplates" in base["spec"] and "volumeClaimTemplates" not in patch["spec"]:
        check(
            sts["spec"].get("volumeClaimTemplates") == base["spec"]["volumeClaimTemplates"],
            "the base's volume claim templates are kept",
        )
    if "resources" in pc:
        check(c["resources"] == pc["resources"], "the patch's resources")
    grace = patch["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", base["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    check(sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace, f"termination grace {grace} s")
    image = bc["image"]
    for i in k.get("images", []):
        if image.split(":")[0] == i["name"]:
            image = f"{i.get('newName', i['name'])}:{i.get('newTag', image.split(':')[1])}"
    check(c["image"] == image, f"image {image} (rendered {c['image']})")

# What the workloads read from Secrets and ConfigMaps.
read = set()
for d in rendered:
    spec = d.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        continue
    for c in spec.get("containers", []):
        for e in c.get("env", []):
            for ref, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                r = e.get("valueFrom", {}).get(ref)
                if r and not r.get("optional"):
                    read.add((kind, r["name"]))
    for v in spec.get("volumes", []):
        if "configMap" in v:
            read.add(("ConfigMap", v["configMap"]["name"]))
        if "secret" in v and not v["secret"].get("optional"):
            read.add(("Secret", v["secret"]["secretName"]))
out_of_band = {("Secret", "streamd-secrets")} if "create secret generic streamd-secrets" in (
    overlay / "kustomization.yaml"
).read_text() else set()
for kind, name in sorted(read):
    check((kind, name) in set(ids) or (kind, name) in out_of_band, f"{kind} {name} read by a workload is rendered or made out of band")
check(bool(read), "the workloads read a Secret or ConfigMap (the check looked)")

sys.exit(1 if failures else 0)

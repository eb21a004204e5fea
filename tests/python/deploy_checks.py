"""Checks across the deployment files that no schema can make
(tests/deploy.rs runs this with the tests' virtualenv, which has PyYAML):

- every kustomization's resources and patches exist, and each patch
  names a resource (kind, name) of the base it patches;
- the StatefulSet's terminationGracePeriodSeconds covers its preStop pause
  plus the drain and shutdown deadlines streamd prints for the ConfigMap's
  configuration (`streamd config`, passed in as JSON);
- the UDP ports of the image, the pod and the media Service are the ones
  the configuration's WebRTC engines bind;
- the probes point at /healthz and /readyz.

usage: python deploy_checks.py REPO EFFECTIVE_CONFIG_TOML [ENV_JSON_OUT]
(ENV_JSON_OUT: the STREAMD_ variables of each deployment, written for the
caller to check with `streamd check-config`)
Prints one line per check and exits 1 on any failure.
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml

repo = pathlib.Path(sys.argv[1])
effective = tomllib.loads(pathlib.Path(sys.argv[2]).read_text())
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources_of(kdir):
    """(kind, name) of every resource a kustomization directory yields."""
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    out = set()
    for r in k.get("resources", []):
        p = (kdir / r).resolve()
        check(p.exists(), f"{kdir.relative_to(repo)}: resource {r} exists")
        if p.is_dir():
            out |= resources_of(p)
        elif p.exists():
            out |= {(d["kind"], d["metadata"]["name"]) for d in docs(p)}
    for g in k.get("secretGenerator", []):
        out.add(("Secret", g["name"]))
    for p in k.get("patches", []):
        f = kdir / p["path"]
        check(f.exists(), f"{kdir.relative_to(repo)}: patch {p['path']} exists")
        if f.exists():
            for d in docs(f):
                target = (d["kind"], d["metadata"]["name"])
                check(target in out, f"{f.relative_to(repo)} patches {target}, which the base has")
    return out


for overlay in sorted((repo / "k8s/overlays").iterdir()):
    names = resources_of(overlay)
    check(("StatefulSet", "streamd") in names, f"{overlay.name}: has the streamd StatefulSet")
    check(
        ("Secret", "streamd-secrets") in names or overlay.name in ("prod", "cluster"),
        f"{overlay.name}: the secrets are generated, or created out of band (prod, cluster)",
    )

sts = docs(repo / "k8s/base/statefulset.yaml")[0]
pod = sts["spec"]["template"]["spec"]
c = pod["containers"][0]
pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
secs = lambda s: float(re.fullmatch(r"(\d+)s", s).group(1))
# src/server.rs END_LINGER: after a drain ends the streams, HTTP serves
# their end for 2 s.
END_LINGER = 2
needed = (
    pre_stop
    + END_LINGER
    + secs(effective["server"]["drain_timeout"])
    + secs(effective["http"]["shutdown_timeout"])
    + secs(effective["webhooks"]["drain_timeout"])
    + secs(effective["record"]["flush_timeout"])
)
grace = pod["terminationGracePeriodSeconds"]
check(grace > needed, f"terminationGracePeriodSeconds {grace} > {needed} (preStop + drain + end linger + shutdown + webhooks + flush)")

engines = effective["webrtc"]["engines"]
first = int(effective["webrtc"]["udp_listen"].rsplit(":", 1)[1])
want = set(range(first, first + engines))
# And the WHIP publishers' own socket.
whip = int(effective["whip"]["udp_listen"].rsplit(":", 1)[1])
want.add(whip)
# And SRT publishers', when on.
if effective["srt"]["enabled"]:
    want.add(int(effective["srt"]["listen"].rsplit(":", 1)[1]))
pod_udp = {p["containerPort"] for p in c["ports"] if p["protocol"] == "UDP"}
check(pod_udp == want, f"pod UDP ports {sorted(pod_udp)} are the {engines} engines', WHIP's and SRT's {sorted(want)}")
svc = [d for d in docs(repo / "k8s/base/services.yaml") if d["metadata"]["name"] == "streamd-media"][0]
svc_udp = {p["port"] for p in svc["spec"]["ports"] if p["protocol"] == "UDP"}
check(svc_udp == want, f"media Service UDP ports {sorted(svc_udp)} are the engines'")
expose = re.search(r"^EXPOSE (.*)$", (repo / "Dockerfile").read_text(), re.M).group(1)
image_udp = set()
for m in re.finditer(r"(\d+)(?:-(\d+))?/udp", expose):
    image_udp |= set(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
check(image_udp == want, f"the image exposes UDP {expose}")
for port in ("1935/tcp", "3333/tcp", "3334/tcp", "3478/tcp"):
    check(port in expose, f"the image exposes {port}")

check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe: /healthz")
check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe: /readyz")
check(c["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root filesystem")
check(pod["securityContext"]["runAsUser"] == 10001, "runs as the image's user 10001")

# The STREAMD_ variables each deployment sets, for `streamd check-config`
# (valueFrom: a value of the kind the source gives).
samples = {
    "STREAMD_DATABASE__URL": "postgres://streamd:secret@postgres:5432/streamd",
    "STREAMD_RECORD__NODE": "streamd-0",
    "STREAMD_TURN__SECRET": "a-turn-secret-of-at-least-32-bytes-0123",
    "STREAMD_CLUSTER__NODE": "streamd-0",
    "STREAMD_CLUSTER__SECRET": "a-cluster-secret-of-at-least-32-bytes-01",
}
envs = {}


def interpolate(v):
    """Compose's ${VAR:-default} and ${VAR:?error} with their defaults (a
    required variable, often a secret, as 32 characters)."""
    return re.sub(r"\$\{[A-Z_]+(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m.group(1) or "x" * 32, str(v))


def container_env(c):
    # Kubernetes' $(VAR) references to other variables (a pod's address),
    # as an address.
    return {
        e["name"]: re.sub(r"\$\([A-Z_]+\)", "10.0.0.1", e["value"])
        if "value" in e
        else samples.get(e["name"], "x")
        for e in c.get("env", [])
        if e["name"].startswith("STREAMD_")
    }


base_env = container_env(c)
for overlay in sorted((repo / "k8s/overlays").iterdir()):
    env = dict(base_env)
    for d in docs(overlay / "statefulset.yaml"):
        env.update(container_env(d["spec"]["template"]["spec"]["containers"][0]))
    envs[f"k8s/{overlay.name}"] = env
# The cluster overlay's edges: their own Deployment, on the same
# configuration.
for overlay in sorted((repo / "k8s/overlays").iterdir()):
    edge = overlay / "edge.yaml"
    if edge.exists():
        dep = [d for d in docs(edge) if d["kind"] == "Deployment"][0]
        ec = dep["spec"]["template"]["spec"]["containers"][0]
        envs[f"k8s/{overlay.name}-edge"] = container_env(ec)
        check(ec["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{overlay.name} edges: readiness probe /readyz")
        edge_udp = {p["containerPort"] for p in ec["ports"] if p["protocol"] == "UDP"}
        check(edge_udp == set(range(first, first + engines)), f"{overlay.name} edges: UDP ports are the engines'")
    cache = overlay / "cache.yaml"
    if cache.exists():
        cm = [d for d in docs(cache) if d["kind"] == "ConfigMap"][0]
        shipped = (repo / "config/nginx/llhls-cache.conf.template").read_text()
        check(
            cm["data"]["llhls-cache.conf.template"] == shipped,
            f"{overlay.name}: the cache's ConfigMap is config/nginx/llhls-cache.conf.template",
        )
compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
envs["compose"] = {
    k: interpolate(v)
    for k, v in compose["services"]["streamd"]["environment"].items()
    if k.startswith("STREAMD_")
}
if len(sys.argv) > 3:
    pathlib.Path(sys.argv[3]).write_text(json.dumps(envs))
check(all(envs.values()), "every deployment sets STREAMD_ variables")

sys.exit(1 if failures else 0)

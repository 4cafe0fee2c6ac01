#!/usr/bin/env python3
"""Static checks of the deployment in deploy/ (no Docker, no cluster needed).

    check_deploy.py manifests REPO_ROOT   the Dockerfile, compose file, Prometheus config and
                                          Kubernetes manifests agree with each other
    check_deploy.py split REPO_ROOT       deploy/split-cameras.sh shares a camera list out among
                                          replicas: every camera once, none twice

Prints what it checked; on any failure prints every failure to stderr and exits 1.
Called by tests/deploy.rs.
"""

import fnmatch
import os
import re
import shlex
import stat
import subprocess
import tempfile
import sys
import traceback
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("the Python package PyYAML is missing: run scripts/setup.sh")

# kind -> apiVersion of every Kubernetes object deploy/ may contain.
EXPECTED_API = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "ConfigMap": "v1",
    "Pod": "v1",
    "PodMonitor": "monitoring.coreos.com/v1",
}
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
TRITON_IMAGE = re.compile(r"^nvcr\.io/nvidia/tritonserver:(\d{2}\.\d{2})-py3$")
TRITON_URL = re.compile(r"^triton://([A-Za-z0-9.-]+):(\d+)/([A-Za-z0-9_.-]+)(?:/\d+)?$")
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MODEL_FLAGS = ("--pose-model", "--seg-model", "--depth-model", "--normal-model", "--detector")
# The image name the worker manifests use; kustomize's `images` rewrites it to the registry's.
WORKER_IMAGE = "sapiens-stream"
PROGRAM = "sapiens-stream"

# scripts/setup.sh's apt packages, by what the runtime image needs of them. A package setup.sh
# gains must be classified here: then the runtime stage is checked to install it (or its library).
SETUP_BUILD_ONLY = {
    "build-essential",  # compilers
    "pkg-config",  # finding GStreamer at build time
    "curl",  # rustup
    "python3",  # .venv, model generator, test references
    "python3-venv",
    "gstreamer1.0-tools",  # gst-launch/gst-inspect, for people and tests
    "mosquitto",  # test peer
    "chromium",  # test peer
    "libpython3.11",  # the Triton test server's Python backend (tests/reference/triton_server.py)
}
SETUP_DEV_TO_RUNTIME = {
    "libgstreamer1.0-dev": "libgstreamer1.0-0",
    "libgstreamer-plugins-base1.0-dev": "libgstreamer-plugins-base1.0-0",
    "libgstrtspserver-1.0-dev": "libgstrtspserver-1.0-0",
}


class Failures:
    """Collects failures so one run reports all of them."""

    def __init__(self):
        self.items = []
        self.checked = 0

    def expect(self, condition, message):
        self.checked += 1
        if not condition:
            self.items.append(message)
        return bool(condition)

    def section(self, name, function, *args):
        try:
            function(self, *args)
        except Exception:  # a missing key or object: report it, go on with the other sections
            self.items.append(f"{name}: {traceback.format_exc(limit=3).strip()}")


# ---------------------------------------------------------------------------------------------
# Loading.


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomization_objects(directory, seen=None):
    """Every object a kustomization directory builds (resources, recursively), with its file."""
    seen = set() if seen is None else seen
    directory = directory.resolve()
    if directory in seen:
        return []
    seen.add(directory)
    k = load_yaml_documents(directory / "kustomization.yaml")[0]
    objects = []
    for resource in k.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += kustomization_objects(path, seen)
        else:
            objects += [(path, d) for d in load_yaml_documents(path)]
    return objects


def pod_spec(workload):
    return workload["spec"]["template"]["spec"] if workload["kind"] != "Pod" else workload["spec"]


def pod_labels(workload):
    if workload["kind"] == "Pod":
        return workload["metadata"].get("labels", {})
    return workload["spec"]["template"]["metadata"].get("labels", {})


def selects(selector, labels):
    """A non-empty equality selector that these labels satisfy."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_ports(container):
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def resolve_port(container, port):
    """A probe's or Service's port (number or name) as a container port number, or None."""
    ports = container_ports(container)
    if isinstance(port, int):
        return port if port in ports.values() else None
    return ports.get(port)


def flag_value(args, flag):
    """The value of `--flag VALUE` or `--flag=VALUE`, or None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1 :]
    return None


def flag_values(args, flag):
    values = []
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
    return values


def host_port(address):
    host, _, port = address.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------------------------------------
# Every YAML file parses; kustomizations reference files that exist and leave none out.


def check_yaml_files(f, deploy):
    files = sorted(list(deploy.rglob("*.yaml")) + list(deploy.rglob("*.yml")))
    f.expect(files, "no YAML files under deploy/")
    for path in files:
        try:
            documents = load_yaml_documents(path)
        except yaml.YAMLError as e:
            f.expect(False, f"{path}: does not parse: {e}")
            continue
        f.expect(documents, f"{path}: no YAML document")
        for d in documents:
            f.expect(isinstance(d, dict), f"{path}: a document is not a mapping")


def check_kustomizations(f, k8s):
    referenced = set()
    kustomizations = sorted(k8s.rglob("kustomization.yaml"))
    f.expect(k8s / "kustomization.yaml" in kustomizations, "deploy/k8s/kustomization.yaml is missing")
    for path in kustomizations:
        k = load_yaml_documents(path)[0]
        f.expect(k.get("apiVersion") == KUSTOMIZE_API, f"{path}: apiVersion {k.get('apiVersion')}")
        f.expect(k.get("kind") == "Kustomization", f"{path}: kind {k.get('kind')}")
        for resource in k.get("resources", []):
            target = path.parent / resource
            if target.is_dir():
                f.expect(
                    (target / "kustomization.yaml").is_file(),
                    f"{path}: resource {resource} is a folder without kustomization.yaml",
                )
            else:
                f.expect(target.is_file(), f"{path}: resource {resource} does not exist")
                referenced.add(target.resolve())
        for generator in k.get("configMapGenerator", []):
            for entry in generator.get("files", []):
                source = entry.split("=", 1)[-1]
                f.expect((path.parent / source).is_file(), f"{path}: generator file {source} does not exist")
    # A manifest no kustomization lists is never applied: a stale copy, or a forgotten resource.
    for manifest in sorted(k8s.rglob("*.yaml")):
        if manifest.name != "kustomization.yaml":
            f.expect(manifest.resolve() in referenced, f"{manifest}: not listed in any kustomization.yaml")


def check_kinds(f, k8s):
    for path in sorted(k8s.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for d in load_yaml_documents(path):
            kind = d.get("kind")
            f.expect(kind in EXPECTED_API, f"{path}: unexpected kind {kind}")
            if kind in EXPECTED_API:
                f.expect(
                    d.get("apiVersion") == EXPECTED_API[kind],
                    f"{path}: {kind} has apiVersion {d.get('apiVersion')}, expected {EXPECTED_API[kind]}",
                )
            f.expect(d.get("metadata", {}).get("name"), f"{path}: {kind} without metadata.name")


# ---------------------------------------------------------------------------------------------
# Kubernetes: Triton, the workers, their Services, volumes and scraping.


class Cluster:
    """The objects of the base kustomization, and what the checks look up in them."""

    def __init__(self, k8s):
        self.objects = [d for _, d in kustomization_objects(k8s / "base")]
        # Every kustomization: base, overlays, tools (images entries, generators).
        self.kustomizations = [load_yaml_documents(p)[0] for p in sorted(k8s.rglob("kustomization.yaml"))]

    def of_kind(self, *kinds):
        return [o for o in self.objects if o["kind"] in kinds]

    def workload_with_image(self, test):
        found = []
        for o in self.of_kind("Deployment", "StatefulSet"):
            for c in pod_spec(o)["containers"]:
                if test(c["image"]):
                    found.append((o, c))
        return found

    def services_selecting(self, workload):
        labels = pod_labels(workload)
        return [s for s in self.of_kind("Service") if selects(s["spec"].get("selector"), labels)]

    def triton(self):
        found = self.workload_with_image(lambda image: TRITON_IMAGE.match(image))
        assert len(found) == 1, f"expected one Triton workload, found {len(found)}"
        return found[0]

    def worker(self):
        found = self.workload_with_image(lambda image: image == WORKER_IMAGE)
        assert len(found) == 1, f"expected one worker workload with image {WORKER_IMAGE}, found {len(found)}"
        return found[0]


def triton_ports(f, container, where):
    """Triton's http, grpc and metrics container ports, checked against its --*-port flags."""
    args = container.get("command", []) + container.get("args", [])
    ports = container_ports(container)
    result = {}
    for name, default in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        flag = flag_value(args, f"--{name}-port")
        port = int(flag) if flag else default
        f.expect(
            port in ports.values(),
            f"{where}: Triton serves {name} on {port} but the container does not expose it",
        )
        result[name] = port
    return result


def check_workload_selector(f, workload):
    name = workload["metadata"]["name"]
    f.expect(
        selects(workload["spec"]["selector"].get("matchLabels"), pod_labels(workload)),
        f"{workload['kind']} {name}: spec.selector does not match its pod labels",
    )


def check_service_targets(f, service, container):
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        f.expect(
            resolve_port(container, target) is not None,
            f"Service {service['metadata']['name']}: port {port.get('name')} targets {target}, "
            "which the selected container does not expose",
        )


def probe_target(container, probe_name):
    probe = container.get(probe_name) or {}
    get = probe.get("httpGet") or {}
    return get.get("path"), resolve_port(container, get.get("port"))


def check_triton(f, cluster):
    deployment, container = cluster.triton()
    where = f"Triton {deployment['kind']} {deployment['metadata']['name']}"
    f.expect(deployment["kind"] == "Deployment", f"{where}: expected a Deployment")
    check_workload_selector(f, deployment)
    gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    f.expect(isinstance(gpus, int) and gpus >= 1, f"{where}: limits nvidia.com/gpu is {gpus!r}, not a GPU count")
    ports = triton_ports(f, container, where)
    f.expect(ports["grpc"] == 8001, f"{where}: gRPC port {ports['grpc']}, expected 8001")
    args = container.get("command", []) + container.get("args", [])
    repository = flag_value(args, "--model-repository")
    f.expect(repository == "/models", f"{where}: --model-repository is {repository!r}, expected /models")
    # The repository mount comes from a PersistentVolumeClaim of this deployment.
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    volume = volumes.get(mounts.get(repository), {})
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    claims = [p["metadata"]["name"] for p in cluster.of_kind("PersistentVolumeClaim")]
    f.expect(claim in claims, f"{where}: {repository} is not mounted from one of the PVCs {claims} (got {claim})")
    # Probes on Triton's own HTTP health endpoints.
    for probe, path in (("livenessProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready")):
        got_path, got_port = probe_target(container, probe)
        f.expect(got_path == path, f"{where}: {probe} path {got_path}, expected {path}")
        f.expect(got_port == ports["http"], f"{where}: {probe} port {got_port}, expected the HTTP port {ports['http']}")
    start_path, start_port = probe_target(container, "startupProbe")
    f.expect(
        start_path in ("/v2/health/live", "/v2/health/ready") and start_port == ports["http"],
        f"{where}: no startupProbe on Triton's health endpoints: model loading would trip the liveness probe",
    )
    # Its Service.
    services = cluster.services_selecting(deployment)
    f.expect(len(services) == 1, f"{where}: {len(services)} Services select its pods, expected 1")
    for service in services:
        check_service_targets(f, service, container)
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    check_annotations(f, annotations, ports["metrics"], where)


def triton_service_ports(cluster):
    """(Service name, {service port: container port}) of the Service in front of Triton."""
    deployment, container = cluster.triton()
    service = cluster.services_selecting(deployment)[0]
    mapping = {}
    for port in service["spec"]["ports"]:
        mapping[port["port"]] = resolve_port(container, port.get("targetPort", port["port"]))
    return service["metadata"]["name"], mapping


def check_annotations(f, annotations, port, where):
    f.expect(annotations.get("prometheus.io/scrape") == "true", f"{where}: prometheus.io/scrape is not \"true\"")
    f.expect(
        annotations.get("prometheus.io/port") == str(port),
        f"{where}: prometheus.io/port is {annotations.get('prometheus.io/port')!r}, the metrics port is {port}",
    )
    f.expect(annotations.get("prometheus.io/path", "/metrics") == "/metrics", f"{where}: prometheus.io/path")


def check_model_urls(f, args, service_name, grpc_port, where):
    """Every model flag names a model on Triton's Service at its gRPC port; returns the models."""
    models = set()
    for flag in MODEL_FLAGS:
        for value in flag_values(args, flag):
            match = TRITON_URL.match(value)
            if not f.expect(match, f"{where}: {flag} {value} is not triton://HOST:PORT/MODEL[/VERSION]"):
                continue
            host, port, model = match.group(1), int(match.group(2)), match.group(3)
            f.expect(host == service_name, f"{where}: {flag} goes to host {host}, Triton is {service_name}")
            f.expect(port == grpc_port, f"{where}: {flag} goes to port {port}, Triton's gRPC port is {grpc_port}")
            models.add(model)
    f.expect(flag_value(args, "--pose-model"), f"{where}: no --pose-model")
    return models


def check_worker(f, cluster, dockerfile):
    workload, container = cluster.worker()
    name = workload["metadata"]["name"]
    where = f"worker {workload['kind']} {name}"
    check_workload_selector(f, workload)
    spec = workload["spec"]
    replicas = spec.get("replicas", 1)
    env = {e["name"]: e for e in container.get("env", [])}
    # Each replica takes its share of the camera list: a StatefulSet gives it a stable ordinal.
    f.expect(workload["kind"] == "StatefulSet", f"{where}: expected a StatefulSet (stable ordinals)")
    f.expect(
        spec.get("podManagementPolicy") == "Parallel",
        f"{where}: podManagementPolicy must be Parallel, or a replica whose camera is down blocks the next",
    )
    headless = [s for s in cluster.of_kind("Service") if s["metadata"]["name"] == spec.get("serviceName")]
    f.expect(headless, f"{where}: serviceName {spec.get('serviceName')} is not a Service here")
    for service in headless:
        f.expect(service["spec"].get("clusterIP") == "None", f"{where}: its Service is not headless")
        f.expect(selects(service["spec"].get("selector"), pod_labels(workload)), f"{where}: its Service does not select its pods")
        check_service_targets(f, service, container)
    # The images entry of the base kustomization rewrites this image; the tools' one must agree.
    images = [k.get("images") for k in cluster.kustomizations if k.get("images")]
    f.expect(images and all(i == images[0] for i in images), f"kustomizations disagree on images: {images}")
    f.expect(images and any(i["name"] == WORKER_IMAGE for i in images[0]), f"no kustomize images entry for {WORKER_IMAGE}")

    # command: the split script, where the image has it; args: LIST ORDINAL COUNT -- program run ...
    command = container.get("command", [])
    args = container.get("args", [])
    f.expect(
        len(command) == 1 and command[0].endswith("/split-cameras.sh"),
        f"{where}: command {command} is not the split script",
    )
    if command:
        f.expect(
            os.path.dirname(command[0]) + "/" in dockerfile.runtime_copy_destinations(),
            f"{where}: {command[0]} is not where the Dockerfile's runtime stage copies files",
        )
        f.expect("deploy/split-cameras.sh" in dockerfile.text, "the Dockerfile does not put deploy/split-cameras.sh in the image")
    assert len(args) >= 6 and args[3] == "--", f"{where}: args must be LIST ORDINAL COUNT -- {PROGRAM} run ..."
    camera_list, ordinal, count = args[0], args[1], args[2]
    program = args[4:]
    f.expect(program[:2] == [PROGRAM, "run"], f"{where}: runs {program[:2]}, expected {PROGRAM} run")
    f.expect("--input" not in program, f"{where}: inputs must come from the camera list, not the args")
    # ORDINAL: the pod name; COUNT: the replica count, kept equal to spec.replicas.
    f.expect(ordinal == "$(POD_NAME)", f"{where}: ordinal argument {ordinal}, expected $(POD_NAME)")
    f.expect(
        env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
        f"{where}: POD_NAME is not the pod's metadata.name",
    )
    f.expect(count == "$(WORKER_REPLICAS)", f"{where}: count argument {count}, expected $(WORKER_REPLICAS)")
    f.expect(
        env.get("WORKER_REPLICAS", {}).get("value") == str(replicas),
        f"{where}: WORKER_REPLICAS={env.get('WORKER_REPLICAS', {}).get('value')} but replicas={replicas}",
    )
    # The list file comes from the generated camera ConfigMap.
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    volume = volumes.get(mounts.get(os.path.dirname(camera_list)), {})
    config_map = (volume.get("configMap") or {}).get("name")
    generators = {
        g["name"]: [e.split("=", 1)[-1] for e in g.get("files", [])]
        for k in cluster.kustomizations
        for g in k.get("configMapGenerator", [])
    }
    f.expect(config_map in generators, f"{where}: {camera_list} is not mounted from a generated ConfigMap {list(generators)}")
    f.expect(
        os.path.basename(camera_list) in [os.path.basename(x) for x in generators.get(config_map, [])],
        f"{where}: ConfigMap {config_map} has no file {os.path.basename(camera_list)}",
    )
    # Models on Triton's Service, at the port that reaches Triton's gRPC port.
    _, triton_container = cluster.triton()
    triton_grpc = triton_ports(Failures(), triton_container, "")["grpc"]
    service_name, service_ports = triton_service_ports(cluster)
    grpc_service_ports = [p for p, target in service_ports.items() if target == triton_grpc]
    f.expect(grpc_service_ports, f"Triton's Service has no port to its gRPC port {triton_grpc}")
    models = check_model_urls(f, program, service_name, grpc_service_ports[0] if grpc_service_ports else None, where)
    # --http: reachable from outside the pod, on the container port the probes and scraping use.
    http = flag_value(program, "--http")
    assert http, f"{where}: no --http (metrics, health)"
    host, port = host_port(http)
    f.expect(host == "0.0.0.0", f"{where}: --http binds {host}, not reachable by probes or Prometheus")
    f.expect(port in container_ports(container).values(), f"{where}: --http port {port} is not a container port")
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        got_path, got_port = probe_target(container, probe)
        f.expect(got_path == path, f"{where}: {probe} path {got_path}, expected {path}")
        f.expect(got_port == port, f"{where}: {probe} port {got_port}, expected the --http port {port}")
    check_annotations(f, workload["spec"]["template"]["metadata"].get("annotations", {}), port, where)
    return models


def metrics_port_of(cluster, workload):
    """The port Prometheus must scrape on a workload's pods: Triton's metrics port, the worker's --http."""
    container = pod_spec(workload)["containers"][0]
    if TRITON_IMAGE.match(container["image"]):
        return triton_ports(Failures(), container, "")["metrics"]
    args = container.get("args", [])
    return host_port(flag_value(args, "--http"))[1]


def check_pod_monitors(f, cluster, k8s):
    overlay = k8s / "prometheus-operator"
    objects = [d for _, d in kustomization_objects(overlay)]
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    workloads = cluster.of_kind("Deployment", "StatefulSet")
    scraped = set()
    for monitor in monitors:
        where = f"PodMonitor {monitor['metadata']['name']}"
        selector = monitor["spec"]["selector"].get("matchLabels")
        targets = [w for w in workloads if selects(selector, pod_labels(w))]
        f.expect(len(targets) == 1, f"{where}: selects {len(targets)} workloads, expected 1")
        for workload in targets:
            scraped.add(workload["metadata"]["name"])
            container = pod_spec(workload)["containers"][0]
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                port = resolve_port(container, endpoint.get("port"))
                f.expect(
                    port == metrics_port_of(cluster, workload),
                    f"{where}: port {endpoint.get('port')} is {port}, the metrics port is {metrics_port_of(cluster, workload)}",
                )
                f.expect(endpoint.get("path", "/metrics") == "/metrics", f"{where}: path {endpoint.get('path')}")
    every = {w["metadata"]["name"] for w in workloads}
    f.expect(scraped == every, f"PodMonitors scrape {sorted(scraped)}, the workloads are {sorted(every)}")


def check_model_loader(f, cluster, k8s):
    objects = [d for _, d in kustomization_objects(k8s / "tools")]
    pods = [o for o in objects if o["kind"] == "Pod"]
    f.expect(len(pods) == 1, f"deploy/k8s/tools: {len(pods)} Pods, expected the model loader")
    claims = {p["metadata"]["name"] for p in cluster.of_kind("PersistentVolumeClaim")}
    for pod in pods:
        container = pod["spec"]["containers"][0]
        f.expect(container["image"] == WORKER_IMAGE, f"model loader image {container['image']}, expected {WORKER_IMAGE}")
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounted = {
            (volumes[m["name"]].get("persistentVolumeClaim") or {}).get("claimName")
            for m in container.get("volumeMounts", [])
            if not m.get("readOnly")
        }
        f.expect(claims & mounted, f"model loader does not mount the model repository PVC {sorted(claims)} read-write")


# ---------------------------------------------------------------------------------------------
# Compose and its Prometheus configuration.


def compose_command(service):
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def volume_mounts(service):
    """(source, target) of each short-syntax volume."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            mounts.append((parts[0], parts[1]))
        else:
            mounts.append((volume.get("source"), volume.get("target")))
    return mounts


def published_container_ports(service):
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].split(":")[-1]))
    return ports


def check_compose(f, deploy, k8s_models):
    path = deploy / "compose.yaml"
    compose = load_yaml_documents(path)[0]
    services = compose["services"]
    # Build contexts and Dockerfiles exist; the context has the .dockerignore.
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = (deploy / (build if isinstance(build, str) else build.get("context", "."))).resolve()
        dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        f.expect(context.is_dir(), f"compose {name}: build context {context} does not exist")
        f.expect(dockerfile.is_file(), f"compose {name}: Dockerfile {dockerfile} does not exist")
        f.expect((context / ".dockerignore").is_file(), f"compose {name}: no .dockerignore in {context}")
    # Triton.
    tritons = {n: s for n, s in services.items() if TRITON_IMAGE.match(s.get("image", ""))}
    assert len(tritons) == 1, f"compose: {len(tritons)} Triton services, expected 1"
    triton_name, triton = next(iter(tritons.items()))
    command = compose_command(triton)
    f.expect(flag_value(command, "--model-repository") == "/models", "compose triton: --model-repository is not /models")
    mounts = dict((t, s) for s, t in volume_mounts(triton))
    f.expect("/models" in mounts, "compose triton: nothing mounted at /models")
    ports = {}
    for name, default in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        flag = flag_value(command, f"--{name}-port")
        ports[name] = int(flag) if flag else default
    f.expect(
        published_container_ports(triton) >= {8000, 8001, 8002} and set(ports.values()) == {8000, 8001, 8002},
        f"compose triton: ports {sorted(published_container_ports(triton))}, serving {ports}",
    )
    devices = triton.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    f.expect(any("gpu" in d.get("capabilities", []) for d in devices), "compose triton: no GPU device reservation")
    test = triton.get("healthcheck", {}).get("test", [])
    test = " ".join(test) if isinstance(test, list) else str(test)
    f.expect(
        f"localhost:{ports['http']}/v2/health/ready" in test,
        f"compose triton: healthcheck {test!r} does not ask /v2/health/ready on the HTTP port",
    )
    # Workers: own cameras, models on Triton's gRPC port, start once Triton is healthy.
    workers = {n: s for n, s in services.items() if compose_command(s)[:1] == ["run"]}
    f.expect(len(workers) >= 2, f"compose: {len(workers)} workers, expected at least 2")
    cameras = {}
    urls = {}
    metrics_ports = {triton_name: ports["metrics"]}
    models = set()
    for name, worker in workers.items():
        where = f"compose {name}"
        args = compose_command(worker)
        condition = (worker.get("depends_on") or {}).get(triton_name, {})
        f.expect(
            isinstance(condition, dict) and condition.get("condition") == "service_healthy",
            f"{where}: does not wait for {triton_name} to be healthy",
        )
        inputs = flag_values(args, "--input")
        f.expect(inputs, f"{where}: no --input")
        for value in inputs:
            camera, _, url = value.partition("=")
            f.expect(STREAM_NAME.match(camera) and url, f"{where}: --input {value} is not NAME=URL")
            f.expect(camera not in cameras, f"{where}: camera {camera} also in {cameras.get(camera)}")
            f.expect(url not in urls, f"{where}: {url} also read by {urls.get(url)}")
            cameras[camera] = name
            urls[url] = name
        models |= check_model_urls(f, args, triton_name, ports["grpc"], where)
        http = flag_value(args, "--http")
        assert http, f"{where}: no --http"
        host, port = host_port(http)
        f.expect(host == "0.0.0.0", f"{where}: --http binds {host}, unreachable from other containers")
        f.expect(port in published_container_ports(worker), f"{where}: --http port {port} is not published")
        metrics_ports[name] = port
    f.expect(
        models == k8s_models,
        f"compose workers use models {sorted(models)}, Kubernetes workers {sorted(k8s_models)}: one repository serves both",
    )
    # Tools: not started by `up`, and writing the repository Triton reads.
    for name, service in services.items():
        if name in workers or name == triton_name or "prometheus" in service.get("image", ""):
            continue
        f.expect(service.get("profiles"), f"compose {name}: a helper without a profile would start with `up`")
        tool_mounts = dict((t, s) for s, t in volume_mounts(service))
        f.expect(
            tool_mounts.get("/models") == mounts.get("/models"),
            f"compose {name}: writes {tool_mounts.get('/models')}, Triton reads {mounts.get('/models')}",
        )
    # Prometheus: its config file is mounted, and scrapes each service on its metrics port.
    prometheus = [s for s in services.values() if "prometheus" in s.get("image", "")]
    f.expect(len(prometheus) == 1, "compose: no Prometheus service")
    for service in prometheus:
        sources = [s for s, t in volume_mounts(service) if t == "/etc/prometheus/prometheus.yml"]
        f.expect(sources and (deploy / sources[0]).is_file(), "compose prometheus: its config file is not mounted")
        if sources:
            check_prometheus_config(f, deploy / sources[0], metrics_ports)


def check_prometheus_config(f, path, metrics_ports):
    config = load_yaml_documents(path)[0]
    scraped = set()
    for job in config["scrape_configs"]:
        f.expect(job.get("metrics_path", "/metrics") == "/metrics", f"{path}: job {job['job_name']} metrics_path")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = host_port(target)
                f.expect(host in metrics_ports, f"{path}: target {target} is not a compose service with metrics")
                f.expect(
                    metrics_ports.get(host) == port,
                    f"{path}: target {target}, but {host} serves metrics on {metrics_ports.get(host)}",
                )
                scraped.add(host)
    f.expect(scraped == set(metrics_ports), f"{path}: scrapes {sorted(scraped)}, expected {sorted(metrics_ports)}")


# ---------------------------------------------------------------------------------------------
# The Dockerfile shares setup.sh, and its runtime stage has what setup.sh's build needs at run time.


class Dockerfile:
    def __init__(self, path):
        self.text = path.read_text(encoding="utf-8")
        logical, current = [], ""
        for line in self.text.splitlines():
            stripped = line.strip()
            if stripped.startswith("#") and not current:
                continue
            if stripped.startswith("#"):  # a comment inside a continued instruction
                continue
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            current += stripped
            if current.strip():
                logical.append(current.strip())
            current = ""
        # Stages: [(FROM argument, [(INSTRUCTION, arguments)])]
        self.stages = []
        for line in logical:
            instruction, _, rest = line.partition(" ")
            instruction = instruction.upper()
            if instruction == "FROM":
                self.stages.append((rest.strip(), []))
            elif self.stages:
                self.stages[-1][1].append((instruction, rest.strip()))

    def runtime_copy_destinations(self):
        return [
            shlex.split(rest)[-1]
            for instruction, rest in self.stages[-1][1]
            if instruction == "COPY" and "--from=" in rest
        ]


def parse_setup_packages(setup):
    text = setup.read_text(encoding="utf-8")
    block = re.search(r"^packages=\((.*?)^\)", text, re.S | re.M)
    assert block, "scripts/setup.sh: no packages=( ... ) list"
    packages = []
    for line in block.group(1).splitlines():
        packages += line.split("#", 1)[0].split()
    return packages


def apt_packages(run):
    """Package names given to apt-get install in a RUN line."""
    packages = []
    for command in re.split(r"&&|;", run):
        words = command.split()
        if "apt-get" in words and "install" in words:
            after = words[words.index("install") + 1 :]
            packages += [w for w in after if not w.startswith("-")]
    return packages


def ignored(patterns, path):
    """Whether .dockerignore patterns exclude a path (a file, or a folder above it)."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(candidate.split("/")[-1], pattern[3:])
            ):
                excluded = not negate
                break
    return excluded


def check_dockerfile(f, root):
    path = root / "deploy/Dockerfile"
    dockerfile = Dockerfile(path)
    stages = dockerfile.stages
    assert stages, f"{path}: no FROM"
    for image, _ in stages:
        f.expect(
            re.match(r"^debian:(12|bookworm)(-slim)?(\s|$)", image),
            f"{path}: stage FROM {image} is not Debian 12 (bookworm)",
        )
    build_instructions = [i for _, instructions in stages[:-1] for i in instructions] or stages[0][1]
    runs = [rest for instruction, rest in build_instructions if instruction == "RUN"]
    setup_at = [i for i, run in enumerate(runs) if re.search(r"(^|[\s;&|])(\./)?scripts/setup\.sh(\s|;|&|$)", run)]
    build_at = [i for i, run in enumerate(runs) if re.search(r"cargo build[^;&]*--release", run)]
    f.expect(setup_at, f"{path}: no RUN of scripts/setup.sh: the image would not install what CI tests")
    f.expect(build_at, f"{path}: no RUN of cargo build --release")
    f.expect(setup_at and build_at and setup_at[0] < build_at[0], f"{path}: cargo build runs before setup.sh")
    copies = [shlex.split(rest) for instruction, rest in build_instructions if instruction == "COPY"]
    sources = [s for c in copies for s in c[:-1] if not s.startswith("--")]
    f.expect(
        any(s in (".", "./", "scripts", "scripts/", "scripts/setup.sh") for s in sources),
        f"{path}: scripts/setup.sh is not copied into the build stage",
    )
    for source in sources:
        f.expect((root / source).exists(), f"{path}: COPY source {source} does not exist")

    # Runtime stage: entrypoint and ONNX Runtime come from the build stage.
    runtime = stages[-1][1]
    f.expect(len(stages) >= 2, f"{path}: no separate runtime stage")
    destinations = dockerfile.runtime_copy_destinations()
    entrypoints = [rest for instruction, rest in runtime if instruction == "ENTRYPOINT"]
    f.expect(entrypoints, f"{path}: the runtime stage has no ENTRYPOINT")
    if entrypoints:
        entry = yaml.safe_load(entrypoints[-1])  # the exec form is a JSON array
        f.expect(isinstance(entry, list) and entry and entry[0].endswith("/" + PROGRAM), f"{path}: ENTRYPOINT {entry} is not the program")
        if isinstance(entry, list) and entry:
            f.expect(
                os.path.dirname(entry[0]) + "/" in destinations or entry[0] in destinations,
                f"{path}: ENTRYPOINT {entry[0]} is not copied from the build stage",
            )
    env = " ".join(rest for instruction, rest in runtime if instruction == "ENV")
    ort = re.search(r"ORT_DYLIB_PATH=(\S+)", env)
    f.expect(ort, f"{path}: the runtime stage does not set ORT_DYLIB_PATH (it has no .venv to find ONNX Runtime in)")
    if ort:
        f.expect(
            os.path.dirname(ort.group(1)) + "/" in destinations,
            f"{path}: ORT_DYLIB_PATH={ort.group(1)} is not in a folder copied from the build stage",
        )
        f.expect("libonnxruntime.so" in " ".join(runs), f"{path}: the build stage does not collect libonnxruntime.so")

    # Runtime packages: every runtime need of setup.sh's list.
    installed = set()
    for instruction, rest in runtime:
        if instruction == "RUN":
            installed |= set(apt_packages(rest))
    for package in parse_setup_packages(root / "scripts/setup.sh"):
        if package in SETUP_BUILD_ONLY:
            continue
        needed = SETUP_DEV_TO_RUNTIME.get(package, package)
        if package.endswith("-dev") and package not in SETUP_DEV_TO_RUNTIME:
            f.expect(False, f"scripts/setup.sh installs {package}: add its runtime library to SETUP_DEV_TO_RUNTIME here")
            continue
        f.expect(needed in installed, f"{path}: the runtime stage lacks {needed} (setup.sh installs {package})")

    # .dockerignore: leaves the host's build outputs and .venv out, keeps what the build reads.
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    # Every Python environment setup.sh makes: a host copy would make setup.sh skip creating the
    # image's own, and its interpreter links point at the host.
    venvs = re.findall(r"-m venv (\S+)", (root / "scripts/setup.sh").read_text(encoding="utf-8"))
    f.expect(".venv" in venvs, "scripts/setup.sh no longer makes .venv: update this check")
    for venv in venvs:
        f.expect(ignored(patterns, venv + "/bin/python"), f".dockerignore does not exclude {venv}/, which setup.sh makes")
    for excluded in ("target/release/sapiens-stream", "engines/models/x.onnx"):
        f.expect(ignored(patterns, excluded), f".dockerignore does not exclude {excluded}")
    for needed in (
        "scripts/setup.sh",
        "scripts/requirements.txt",
        "engines/generate_models.py",
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "deploy/split-cameras.sh",
    ):
        f.expect(not ignored(patterns, needed), f".dockerignore excludes {needed}, which the build needs")
    return dockerfile


def manifests(root):
    f = Failures()
    deploy = root / "deploy"
    k8s = deploy / "k8s"
    f.section("YAML files", check_yaml_files, deploy)
    f.section("kustomizations", check_kustomizations, k8s)
    f.section("kinds", check_kinds, k8s)
    dockerfile = None
    try:
        dockerfile = check_dockerfile(f, root)
    except Exception:
        f.items.append(f"Dockerfile: {traceback.format_exc(limit=3).strip()}")
    try:
        cluster = Cluster(k8s)
    except Exception:
        # A missing or unparsable manifest, reported above: nothing to check the objects against.
        f.items.append(f"Kubernetes objects: {traceback.format_exc(limit=3).strip()}")
        cluster = None
    models = set()
    if cluster is not None:

        def worker(f):
            models.update(check_worker(f, cluster, dockerfile))

        f.section("Triton", check_triton, cluster)
        f.section("worker", worker)
        f.section("PodMonitors", check_pod_monitors, cluster, k8s)
        f.section("model loader", check_model_loader, cluster, k8s)
    f.section("compose", check_compose, deploy, models)
    return f


# ---------------------------------------------------------------------------------------------
# The camera split.


def run_split(script, *args):
    return subprocess.run(["sh", str(script), *map(str, args)], capture_output=True, text=True)


def share(script, camera_list, ordinal, count):
    result = run_split(script, camera_list, ordinal, count)
    assert result.returncode == 0, f"split {ordinal}/{count} failed: {result.stderr}"
    lines = result.stdout.splitlines()
    for line in lines:
        assert line.startswith("--input "), f"split {ordinal}/{count}: line {line!r}"
    return [line[len("--input ") :] for line in lines]


def list_entries(path):
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return entries


def check_split_of(f, script, camera_list, entries):
    for count in range(1, len(entries) + 3):
        shares = [share(script, camera_list, ordinal, count) for ordinal in range(count)]
        flat = [camera for s in shares for camera in s]
        f.expect(len(flat) == len(set(flat)), f"{camera_list} over {count}: a camera in two shares: {shares}")
        f.expect(sorted(flat) == sorted(entries), f"{camera_list} over {count}: union {sorted(flat)} != list {sorted(entries)}")
        sizes = [len(s) for s in shares]
        f.expect(max(sizes) - min(sizes) <= 1, f"{camera_list} over {count}: unbalanced shares {sizes}")
        # The pod-name form gives the same share as the bare ordinal.
        for ordinal in range(count):
            f.expect(
                share(script, camera_list, f"sapiens-worker-{ordinal}", count) == shares[ordinal],
                f"{camera_list}: pod name sapiens-worker-{ordinal} gets another share than ordinal {ordinal}",
            )


def split(root, scratch):
    f = Failures()
    script = root / "deploy/split-cameras.sh"
    mode = script.stat().st_mode
    f.expect(mode & stat.S_IXUSR, f"{script} is not executable: the worker's command runs it directly")
    f.expect(script.read_text(encoding="utf-8").startswith("#!/bin/sh\n"), f"{script}: not a #!/bin/sh script")
    # The real list, and a hand-made one with comments, blanks, CRLF, padding, query strings and
    # no final newline.
    real = root / "deploy/k8s/base/cameras.txt"
    real_entries = list_entries(real)
    f.expect(len(real_entries) >= 2, f"{real}: fewer than two cameras")
    names = [e.split("=", 1)[0] for e in real_entries]
    f.expect(len(names) == len(set(names)), f"{real}: duplicate camera names")
    f.section("split of cameras.txt", check_split_of, script, real, real_entries)
    tricky = scratch / "cameras.txt"
    tricky.write_bytes(
        b"# cameras\n\ncam_a=rtsp://10.0.0.1/s?user=a&b=1\r\n  cam-b=rtsp://10.0.0.2/s  \n"
        b"   # indented comment\ncam3=http://h/x.mjpeg\ncam4=test://ball?frames=10\ncam5=rtsp://h/5\n"
        # A file input with a space: the share must reach the program as one word.
        b"cam6=/srv/videos/front door.mp4"
    )
    expected = [
        "cam_a=rtsp://10.0.0.1/s?user=a&b=1",
        "cam-b=rtsp://10.0.0.2/s",
        "cam3=http://h/x.mjpeg",
        "cam4=test://ball?frames=10",
        "cam5=rtsp://h/5",
        "cam6=/srv/videos/front door.mp4",
    ]
    f.section("split of a hand-made list", check_split_of, script, tricky, expected)
    # Exec mode: the command gets its own arguments, then its share as separate words.
    result = run_split(script, tricky, 1, 2, "--", "printf", "%s\\n", "run", "--http", "0.0.0.0:9100")
    f.expect(result.returncode == 0, f"exec mode failed: {result.stderr}")
    f.expect(
        result.stdout.splitlines() == ["run", "--http", "0.0.0.0:9100", "--input", expected[1], "--input", expected[3], "--input", expected[5]],
        f"exec mode passed {result.stdout.splitlines()}",
    )
    # Mistakes fail loudly instead of leaving cameras unserved.
    bad_name = scratch / "bad_name.txt"
    bad_name.write_text("cam 1=rtsp://h/1\n")
    no_equals = scratch / "no_equals.txt"
    no_equals.write_text("rtsp://h/1\n")
    for args, why in (
        ((tricky, 2, 2), "ordinal equal to the count"),
        ((tricky, "sapiens-worker-5", 3), "pod ordinal past the count"),
        ((tricky, 0, 0), "count 0"),
        ((tricky, "x", 2), "ordinal not a number"),
        ((bad_name, 0, 1), "camera name with a space"),
        ((no_equals, 0, 1), "line without NAME="),
        ((scratch / "missing.txt", 0, 1), "missing list"),
    ):
        result = run_split(script, *args)
        f.expect(result.returncode != 0, f"split accepted a {why}: {result.stdout!r}")
    # More replicas than cameras: the extra replica gets none and says so, but still runs.
    result = run_split(script, tricky, 7, 8)
    f.expect(result.returncode == 0 and result.stdout == "" and "no camera" in result.stderr, "an empty share is not reported")
    return f


def main(argv):
    if len(argv) != 3 or argv[1] not in ("manifests", "split"):
        sys.exit(__doc__)
    root = Path(argv[2]).resolve()
    if argv[1] == "manifests":
        f = manifests(root)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            f = split(root, Path(scratch))
    if f.items:
        print(f"{len(f.items)} deployment check(s) failed:", file=sys.stderr)
        for item in f.items:
            print(f"- {item}", file=sys.stderr)
        return 1
    print(f"{argv[1]}: {f.checked} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

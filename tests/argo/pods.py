"""A pod of a container template (workflow/controller/workflowpod.go, workflow/executor/executor.go): its spec as
the controller creates it, with Argo's `init` and `wait` containers and the pod spec patches; its env and
emptyDir volumes; its main container run as a local process; what the wait container saves after."""

from __future__ import annotations

import copy
import os
import posixpath
import re
import signal
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from argo.artifacts import _location_s3, _s3_has_location, archive_location, archive_logs, upload
from argo.expressions import _text, replace_tags, substitute
from argo.merge import _POD_MERGE_KEYS, _strategic_merge
from argo.objects import ArgoError, Node, NotModelled, PodView, Preempt, SavedArtifact

if TYPE_CHECKING:
    from argo.workflow import _Operation

EXECUTOR_IMAGE = "quay.io/argoproj/argoexec:v4.1.2"  # the controller's --executor-image default for its release


def _fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def pod_name(workflow: str, node: str, template: str) -> str:
    """workflow/util/pod_name.go GeneratePodName (v2 names): <workflow>-<template>-<fnv32a(node name)>."""
    if workflow == node:
        return workflow
    prefix = f"{workflow}-{template}" if template else workflow
    return f"{prefix[:242]}-{_fnv32a(node)}"


class _PodNotCreated(Exception):
    """The controller could not make the pod (workflowpod.go createWorkflowPod errs): the node is Error."""


_QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+)?$")


def _check_pod_spec(patch, text: str) -> None:
    """util.go ApplyPodSpecPatch: the patch must unmarshal as a PodSpec; quantities must parse there."""
    if not isinstance(patch, dict):
        raise _PodNotCreated(f"invalid podSpecPatch {text!r}: cannot unmarshal into a PodSpec")
    for c in patch.get("containers") or []:
        for kind in ("requests", "limits"):
            for name, q in ((c.get("resources") or {}).get(kind) or {}).items():
                if not _QUANTITY.match(str(q)):
                    raise _PodNotCreated(f"invalid podSpecPatch {text!r}: quantities must match the regular expression "
                                         f"(resources.{kind}.{name}: {q!r})")
    for key, kind in (("nodeSelector", dict), ("tolerations", list)):
        if key in patch and not isinstance(patch[key], kind):
            raise _PodNotCreated(f"invalid podSpecPatch {text!r}: {key} has the wrong type")


class _PodStuck(Exception):
    """The kubelet cannot start the pod: it stays Pending with this reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass
class _PodRun:
    exit_code: int
    log: str
    preempted: Preempt | None


class _Pod:
    """One pod of a container template: volumes, env, the process, and what the executor saves after."""

    def __init__(self, op: _Operation, node: Node, tmpl: dict, attempt: int):
        self.op, self.node, self.tmpl, self.attempt = op, node, tmpl, attempt
        self.root = op.workdir / node.pod_name
        self.mounts: dict[str, Path] = {}  # container path -> host folder
        self.errors: list[str] = []  # the wait container's errors (executor.go AddError)

    def run(self) -> None:
        """Create the pod, run its main container, then do what the wait container does."""
        self.tmpl = self._patched(self.tmpl)
        location = self._archive_location()
        self._check_secret_volumes(location)  # raises _PodStuck before anything runs
        container = self.tmpl["container"]
        self._volumes()
        env = self._env(container)
        argv = [self._map(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not argv:
            raise NotModelled(f"template {self.tmpl['name']}: no command (the image's entrypoint is unknown here)")
        self.node.command = argv
        if argv[0] in ("python", "python3"):
            argv = [sys.executable] + argv[1:]
        run = self._process(argv, env)
        self.node.log = run.log
        self.node.exit_code = str(run.exit_code)
        if run.preempted is not None:
            # The node goes away with the pod: no wait container saves outputs (operator.go inferFailedReason
            # takes the pod's status message, phase Failed).
            self.node.phase, self.node.message = "Failed", run.preempted.message
            return
        self._save_parameters()
        self._save_artifacts(location)
        self._save_logs(location)
        self.node.phase, self.node.message = self._phase(run.exit_code)

    def _phase(self, exit_code: int) -> tuple[str, str]:
        """operator.go inferFailedReason: main's failure first (Failed), then the wait container's (Error)."""
        if exit_code != 0:
            return "Failed", f"main: Error (exit code {exit_code})"
        if self.errors:
            return "Error", f"wait: Error (exit code 1): {self.errors[0]}"
        return "Succeeded", ""

    # -- pod creation (workflow/controller/workflowpod.go) --

    def _patched(self, tmpl: dict) -> dict:
        """workflowpod.go processPodSpecPatch: the workflow's pod spec patch, then the template's, each substituted
        with the globals and pod.name, checked as a PodSpec and merged over the pod (ApplyPodSpecPatch)."""
        texts = [t for t in (self.op.spec.get("podSpecPatch"), tmpl.get("podSpecPatch")) if t]
        pod = {"containers": [{"name": "main", **tmpl["container"]}], "volumes": tmpl.get("volumes") or []}
        for key in ("nodeSelector", "tolerations"):
            if key in tmpl:
                pod[key] = tmpl[key]
        if "securityContext" in self.op.spec:
            pod["securityContext"] = self.op.spec["securityContext"]
        # The legacy (default) pod layout adds an `init` container and a `wait` container before the main one
        # (workflowpod.go createWorkflowPod; workflowpod_layout.go legacyLayout), both from newExecContainer: the
        # executor image with the controller ConfigMap's executor securityContext and resources, nothing else.
        # The pod spec patches are applied after, to the whole pod (processPodSpecPatch, ApplyPodSpecPatch).
        full = copy.deepcopy(pod)
        full["initContainers"] = [self._executor_container("init")]
        full["containers"] = [self._executor_container("wait")] + full["containers"]
        for text in texts:
            text = replace_tags(text, {**self.op.globals, "pod.name": self.node.pod_name})
            try:
                patch = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise _PodNotCreated(f"Failed to convert the PodSpecPatch yaml to json: {e}".splitlines()[0]) from None
            _check_pod_spec(patch, text)
            pod = _strategic_merge(pod, patch, keys=_POD_MERGE_KEYS)
            full = _strategic_merge(full, patch, keys=_POD_MERGE_KEYS)
        self.node.pod = full
        out = dict(tmpl)
        main = next(c for c in pod["containers"] if c["name"] == "main")
        out["container"] = {k: v for k, v in main.items() if k != "name"}
        out["volumes"] = pod.get("volumes") or []
        for key in ("nodeSelector", "tolerations"):
            if key in pod:
                out[key] = pod[key]
        self.node.pod_spec = pod
        return out

    def _executor_container(self, name: str) -> dict:
        """workflowpod.go newExecContainer: Argo's own container `init` or `wait` (argoexec)."""
        executor = self.op.cluster.executor
        container = {"name": name, "image": EXECUTOR_IMAGE, "command": ["argoexec", name]}
        for key in ("securityContext", "resources", "args"):
            if executor.get(key):
                container[key] = copy.deepcopy(executor[key])
        return container

    def _archive_location(self) -> dict | None:
        """workflowpod.go addArchiveLocation: the repository's location when an artifact or the log needs one.

        Its key (the keyFormat) is substituted with the pod's parameters (substitutePodParams): globals,
        inputs and pod.name.
        """
        artifacts = (self.tmpl.get("outputs", {}) or {}).get("artifacts", [])
        need = archive_logs(self.op.repository, self.op.spec) or any(not _s3_has_location(a) for a in artifacts)
        if not need:
            return None
        location = archive_location(self.op.repository)
        if location is None:
            return None
        location["archiveLogs"] = archive_logs(self.op.repository, self.op.spec)
        params = {**self.op.globals, **{f"inputs.parameters.{k}": v for k, v in self.node.inputs.items()},
                  "pod.name": self.node.pod_name}
        return substitute(location, params)

    def _check_secret_volumes(self, location: dict | None) -> None:
        """workflowpod.go createSecretVolumesAndMounts: the key Secrets of the archive location and of each
        artifact become required secret volumes; a missing Secret or key leaves the pod ContainerCreating."""
        locations = [location] + [a for a in (self.tmpl.get("outputs", {}) or {}).get("artifacts", [])]
        for loc in filter(None, locations):
            s3 = loc.get("s3") or {}
            for field_name in ("accessKeySecret", "secretKeySecret", "sessionTokenSecret"):
                ref = s3.get(field_name) or {}
                if not ref.get("name") or not ref.get("key"):
                    continue
                secret = self.op.cluster.secrets.get(ref["name"])
                if secret is None:
                    raise _PodStuck("ContainerCreating", f'MountVolume.SetUp failed for volume "{ref["name"]}" : '
                                    f'secret "{ref["name"]}" not found')
                if ref["key"] not in secret:
                    raise _PodStuck("ContainerCreating", f'MountVolume.SetUp failed for volume "{ref["name"]}" : '
                                    f'references non-existent secret key: {ref["key"]}')

    def _volumes(self) -> None:
        """Each emptyDir the container mounts becomes a fresh folder of this pod."""
        volumes = {v["name"]: v for v in self.tmpl.get("volumes", []) or []}
        for m in self.tmpl["container"].get("volumeMounts", []) or []:
            volume = volumes.get(m["name"]) or {}
            if "emptyDir" not in volume:
                continue  # secrets, PVCs and the like: not modelled; their paths stay the host's
            if m["mountPath"] == "/dev/shm":
                continue  # the host's shared memory serves the same purpose
            folder = self.root / "volumes" / m["name"]
            folder.mkdir(parents=True, exist_ok=True)
            self.mounts[m["mountPath"].rstrip("/")] = folder

    def _map(self, text: str) -> str:
        """A container path on an emptyDir mount -> the host folder that stands for it."""
        for mount, folder in self.mounts.items():
            if text == mount or text.startswith(mount + "/"):
                return str(folder) + text[len(mount):]
        return text

    def _env(self, container: dict) -> dict:
        """The container's environment: image ENV, then envFrom, then env (Kubernetes' order of precedence)."""
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}
        if self.op.cluster.image_env:
            env.update(self.op.cluster.image_env(container.get("image", "")))
        for source in container.get("envFrom", []) or []:
            env.update(self._env_from(source))
        for var in container.get("env", []) or []:
            if "valueFrom" in var:  # the sweep's pods take their Secrets whole, through envFrom
                raise NotModelled(f"env {var['name']}: valueFrom {sorted(var['valueFrom'])}")
            env[var["name"]] = _text(var.get("value", ""))
        env = {k: self._map(v) for k, v in env.items()}
        if "/tmp" in self.mounts:
            env["TMPDIR"] = str(self.mounts["/tmp"])  # see the module docstring: where tempfile writes in the pod
        return env

    def _env_from(self, source: dict) -> dict:
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = self.op.cluster.configmap(self.op.namespace, ref.get("name", ""))
            secret = None if cm is None else cm.get("data") or {}
            kind = "configmap"
        elif "secretRef" in source:
            ref = source["secretRef"]
            secret = self.op.cluster.secrets.get(ref.get("name", ""))
            kind = "secret"
        else:
            raise NotModelled(f"envFrom {sorted(source)}: only secretRef and configMapRef are modelled")
        if secret is None:
            if ref.get("optional"):
                return {}
            raise _PodStuck("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
        prefix = source.get("prefix", "")
        # Keys that are not valid variable names are skipped by the kubelet.
        return {prefix + k: str(v) for k, v in secret.items() if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", prefix + k)}

    # -- the main container --

    def _process(self, argv: list, env: dict) -> _PodRun:
        """Run the command; a matching Preempt kills it from outside once its predicate fires."""
        rule = self.op.preemption_for(self.node, self.tmpl["name"], self.attempt)
        view = PodView(self.node.pod_name, self.node.name, self.tmpl["name"], self.attempt, list(argv), dict(env))
        workdir = self.root / "workdir"  # the image's WORKDIR stands empty here
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        lines: list[str] = []
        failures: list[BaseException] = []  # a predicate that raised: reported once the pod is done
        kill_sent = threading.Event()

        def watch() -> None:
            for line in proc.stdout:
                lines.append(line)
                if rule is None or kill_sent.is_set() or failures:
                    continue
                try:
                    fire = rule.when(line, view)
                except BaseException as e:
                    failures.append(e)
                    continue
                if fire and proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                        kill_sent.set()
                    except ProcessLookupError:
                        pass  # it ended meanwhile: not preempted

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=self.op.pod_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"pod {self.node.pod_name} ran past the harness' {self.op.pod_timeout_s}s limit") from None
        finally:
            reader.join(timeout=60)
        if failures:
            raise RuntimeError(f"the preemption rule for {self.node.pod_name} failed") from failures[0]
        preempted = kill_sent.is_set() and code == -signal.SIGKILL
        if preempted:
            rule.fired.append(self.node.pod_name)
        exit_code = 128 - code if code < 0 else code  # a signal shows as 128 + its number, as a runtime reports it
        return _PodRun(exit_code, "".join(lines), rule if preempted else None)

    # -- the wait container (workflow/executor/executor.go) --

    def _host_path(self, container_path: str) -> Path:
        mapped = self._map(container_path)
        if mapped == container_path:
            raise NotModelled(f"{container_path}: not on an emptyDir volume; the harness cannot read an image's filesystem")
        return Path(mapped)

    def _save_parameters(self) -> None:
        """executor.go SaveParameters: valueFrom.path, or its default when the file is missing."""
        for p in (self.tmpl.get("outputs", {}) or {}).get("parameters", []):
            source = p.get("valueFrom")
            if source is None:
                self.node.outputs[p["name"]] = _text(p.get("value", ""))
                continue
            if not source.get("path"):
                raise NotModelled(f"output parameter {p['name']}: valueFrom {sorted(source)}")
            try:
                value = self._host_path(source["path"]).read_text()
            except (FileNotFoundError, IsADirectoryError):
                if "default" not in source:
                    self.errors.append(f"open {source['path']}: no such file or directory")
                    continue
                value = _text(source["default"])
            self.node.outputs[p["name"]] = value[:-1] if value.endswith("\n") else value  # one newline trimmed

    def _save_artifacts(self, location: dict | None) -> None:
        """executor.go SaveArtifacts / saveArtifact: stage each file, skip optional ones that are missing."""
        for art in (self.tmpl.get("outputs", {}) or {}).get("artifacts", []):
            try:
                staged = self._stage(art)
                if staged is None:
                    continue  # optional and missing: ignored, not saved
                self._save_file(art, *staged, location)
            except ArgoError as e:
                self.errors.append(str(e))

    def _stage(self, art: dict) -> tuple[str, Path] | None:
        """executor.go stageArchiveFile: (file name, local file); `archive: none` keeps the file as it is,
        the default packs it as <name>.tgz."""
        source = self._host_path(art["path"])
        if not source.exists():
            if art.get("optional"):
                return None
            raise ArgoError(f"{art['path']} no such file or directory")
        archive = art.get("archive") or {"tar": {}}
        if "none" in archive:
            return posixpath.basename(art["path"]), source
        if "tar" not in archive:
            raise NotModelled(f"artifact {art['name']}: archive {sorted(archive)}")
        packed = self.root / "outputs" / f"{art['name']}.tgz"
        packed.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(packed, "w:gz") as tar:
            tar.add(source, arcname=source.name)
        return packed.name, packed

    def _save_file(self, art: dict, file_name: str, local: Path, location: dict | None) -> None:
        """executor.go saveArtifactFromFile: an artifact with no key goes to <location key>/<file name>; then
        Relocate fills what the artifact lacks from the archive location."""
        s3 = dict(art.get("s3") or {})
        if not s3.get("key"):
            if location is None:
                raise ArgoError("key unsupported: cannot get key for artifact location, because it is invalid")
            s3["key"] = posixpath.join(_location_s3(location)["key"], file_name)
        if not _s3_has_location({"s3": s3}):  # workflow_types.go Relocate: the location's, with this key
            if location is None:
                raise ArgoError("template artifact location not set")
            s3 = {**_location_s3(location), "key": s3["key"]}
        upload(s3, local, self.op.cluster)
        saved = SavedArtifact(self.node.name, art["name"], s3["bucket"], s3["key"], s3.get("endpoint", ""))
        self.node.artifacts.append(saved)

    def _save_logs(self, location: dict | None) -> None:
        """executor.go SaveLogs: with archiveLogs, the main container's log goes to <location key>/main.log."""
        if not location or not location.get("archiveLogs"):
            return
        log = self.root / "outputs" / "main.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(self.node.log)
        try:
            self._save_file({"name": "main-logs"}, "main.log", log, location)
        except ArgoError as e:
            self.errors.append(str(e))

"""Kubernetes Pod Security Standards, the "restricted" profile, as rules over a pod spec (a dict).

    violations = restricted_violations(pod_spec)   # [] when the pod may run in a namespace that enforces it

Each rule is one control of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(restricted includes baseline), written from its text: the fields it reads, on the pod and on every
container, init container and ephemeral container, and the values it allows. The controls that concern
fields this project never sets (AppArmor, SELinux, /proc mount type, sysctls) check only that they are
absent or the default.
"""

from __future__ import annotations

# Restricted: Volume Types. Only these volume sources are allowed.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def _containers(pod: dict) -> list[dict]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or []), *(pod.get("ephemeralContainers") or [])]


def restricted_violations(pod: dict) -> list[str]:
    """Each control of the restricted profile the pod breaks, as "<container or pod>: <control>"."""
    out = []
    pod_sc = pod.get("securityContext") or {}
    # Baseline: Host Namespaces, HostPath Volumes, Host Ports, Privileged Containers, Capabilities (baseline set)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"pod: host namespaces ({key})")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"pod: volume types ({v['name']}: {', '.join(sorted(kinds - ALLOWED_VOLUMES))})")
    # Restricted: Running as Non-root. The pod sets runAsNonRoot true, or every container does; none sets false.
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    # Restricted: Seccomp. The pod's profile is RuntimeDefault or Localhost, or every container's is; none Unconfined.
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod: seccomp profile {pod_seccomp}")
    # Restricted: Running as Non-root user. runAsUser is not 0, on the pod or any container.
    if pod_sc.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    for c in _containers(pod):
        name, sc = c.get("name", "?"), c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{name}: host ports")
        # Restricted: Privilege Escalation. allowPrivilegeEscalation must be false (unset is not enough).
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation != false")
        caps = sc.get("capabilities") or {}
        # Restricted: Capabilities. Drop ALL; add nothing but NET_BIND_SERVICE.
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
        if sc.get("runAsNonRoot") is False or (not pod_non_root and sc.get("runAsNonRoot") is not True):
            out.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined" or (seccomp is None and pod_seccomp is None) or seccomp not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccomp profile {seccomp or 'unset'}")
        for key in ("appArmorProfile", "seLinuxOptions", "procMount"):
            if key in sc and not (key == "procMount" and sc[key] == "Default"):
                out.append(f"{name}: {key} set")
    return out

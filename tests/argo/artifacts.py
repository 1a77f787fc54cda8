"""The artifact repository (workflow/artifactrepositories/artifactrepositories.go): where a workflow's
repository is found, the archive location a pod saves to, and the S3 driver the wait container uploads with."""

from __future__ import annotations

import ipaddress
import posixpath
from pathlib import Path

import yaml

from argo.objects import ArgoError, Cluster, NotModelled

DEFAULT_REPO_KEY = "workflows.argoproj.io/default-artifact-repository"
DEFAULT_ARCHIVE_PATTERN = "{{workflow.name}}/{{pod.name}}"  # artifact_repository_types.go: DefaultArchivePattern


def resolve_artifact_repository(ref: dict | None, namespace: str, cluster: Cluster) -> tuple[dict, dict | None]:
    """artifactrepositories.go Resolve: (status.artifactRepositoryRef, the repository) of a workflow.

    With a ref: that ConfigMap and key, in the workflow's namespace, then the controller's; no fallback.
    Without: the namespace's `artifact-repositories` ConfigMap under its default-key annotation, then the
    controller's default repository (which may be none).
    """
    if ref is not None:
        places = [{"namespace": namespace, "configMap": ref.get("configMap", ""), "key": ref.get("key", "")},
                  {"namespace": cluster.controller_namespace, "configMap": ref.get("configMap", ""), "key": ref.get("key", "")}]
    else:
        places = [{"namespace": namespace, "configMap": "", "key": ""}, {"default": True}]
    for place in places:
        if place.get("default"):
            return {"default": True}, cluster.default_artifact_repository
        found = _repository_in_configmap(cluster, place)
        if found is not None:
            return found
    raise ArgoError(f'failed to find any artifact repository for artifact repository ref "{ref}"')


def _repository_in_configmap(cluster: Cluster, place: dict) -> tuple[dict, dict] | None:
    """artifactrepositories.go get: a missing ConfigMap or key means "look further" (None)."""
    name = place["configMap"] or "artifact-repositories"
    cm = cluster.configmap(place["namespace"], name)
    if cm is None:
        return None
    key = place["key"] or (cm.get("metadata", {}).get("annotations") or {}).get(DEFAULT_REPO_KEY, "")
    data = cm.get("data") or {}
    if key not in data:
        return None
    try:
        repo = yaml.safe_load(data[key]) or {}
    except yaml.YAMLError as e:
        raise ArgoError(f'failed to unmarshall config map key "{key}": {e}') from None
    return {"namespace": place["namespace"], "configMap": name, "key": key}, repo


def archive_location(repo: dict | None) -> dict | None:
    """artifact_repository_types.go ToArtifactLocation: the repository's bucket, key = its keyFormat.

    The controller's default repository is never nil (controller/config.go passes its config's struct),
    so a workflow without one gets a location of no kind: saving to it fails as "not configured".
    """
    if repo is None:
        return None
    location: dict = {"archiveLogs": bool(repo.get("archiveLogs"))}
    if "s3" in repo:
        s3 = {k: v for k, v in repo["s3"].items() if k not in ("keyFormat", "keyPrefix")}
        s3["key"] = repo["s3"].get("keyFormat") or posixpath.join(repo["s3"].get("keyPrefix", ""), DEFAULT_ARCHIVE_PATTERN)
        location["s3"] = s3
    elif repo:
        raise NotModelled(f"artifact repository kinds other than s3: {sorted(repo)}")
    return location


def s3_endpoint_error(endpoint: str) -> str | None:
    """Why the executor's S3 client would refuse this endpoint, or None.

    workflow/artifacts/s3/s3.go (ArtifactDriver.newClient -> NewClient) hands the endpoint to minio-go's
    New, whose getEndpointURL wants host[:port] with a valid IP or domain: an empty endpoint, or one with a
    scheme, fails there.
    """
    host = endpoint
    if ":" in endpoint:
        host, _, _port = endpoint.rpartition(":")
        if ":" in host:
            return f"address {endpoint}: too many colons in address"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    host = host.strip()
    valid = (0 < len(host) <= 255 and host[0] not in "-_." and host[-1] not in "-_"
             and not any(c in host for c in "`~!@#$%^&*()+={}[]|\\\"';:><?/"))
    return None if valid else f"Endpoint: {endpoint} does not follow ip address or domain name standards."


def archive_logs(repository: dict | None, spec: dict) -> bool:
    """workflowpod.go IsArchiveLogs: the repository's archiveLogs, else the workflow's (a template's own
    archiveLocation, which comes next in Argo, is never rendered and not modelled)."""
    if repository and repository.get("archiveLogs"):
        return True
    return bool(spec.get("archiveLogs", False))


def _location_s3(location: dict) -> dict:
    """workflow_types.go ArtifactLocation.Get: a location of no kind is storage not configured."""
    if "s3" not in location:
        raise ArgoError("artifact storage is not configured; see the docs for setup instructions: "
                        "https://argo-workflows.readthedocs.io/en/latest/configure-artifact-repository/")
    return location["s3"]


def _s3_has_location(art: dict) -> bool:
    """workflow_types.go S3Artifact.HasLocation: endpoint, bucket and key all set."""
    s3 = art.get("s3") or {}
    return bool(s3.get("endpoint") and s3.get("bucket") and s3.get("key"))


def s3_credentials(s3: dict, cluster: Cluster) -> tuple[str, str]:
    """s3.go GetCredentials: the key Secrets (mounted into the pod), else the pod's cloud identity."""
    if (s3.get("accessKeySecret") or {}).get("name"):
        a, b = s3["accessKeySecret"], s3.get("secretKeySecret") or {}
        return cluster.secrets[a["name"]][a["key"]], cluster.secrets[b["name"]][b["key"]]
    if s3.get("useSDKCreds"):
        creds = cluster.cloud_credentials
        if not creds:
            raise ArgoError("failed to put file: no cloud identity credentials for useSDKCreds (Cluster.cloud_credentials)")
        return creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"]
    raise NotModelled("S3 with neither key Secrets nor useSDKCreds (the node's IAM role)")


def upload(s3: dict, local: Path, cluster: Cluster) -> None:
    """The S3 driver (workflow/artifacts/s3/s3.go Save): a client for the endpoint, then the upload."""
    why = s3_endpoint_error(s3.get("endpoint", ""))
    if why:
        raise ArgoError(f"failed to create new S3 client: {why}")
    creds = s3_credentials(s3, cluster)
    import boto3
    from botocore.config import Config

    scheme = "http" if s3.get("insecure") else "https"
    client = boto3.client("s3", endpoint_url=f"{scheme}://{s3['endpoint']}", region_name=s3.get("region") or "us-east-1",
                          config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}),
                          aws_access_key_id=creds[0], aws_secret_access_key=creds[1])
    try:
        client.upload_file(str(local), s3["bucket"], s3["key"])
    except Exception as e:  # any driver failure fails the wait container with its text
        raise ArgoError(f"failed to put file: {e}") from None

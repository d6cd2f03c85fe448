"""Which resources the emulator serves: the built-ins an operator touches, plus every CRD."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..crd import CrdSchema

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass
class ResourceDef:
    group: str
    versions: list[str]  # served versions; the first is the storage/preferred one
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: set[str] = field(default_factory=set)
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per version
    # Per version, compiled once when the CRD is created; a version without one is stored
    # as sent.
    schemas: dict[str, CrdSchema] = field(default_factory=dict)
    crd_name: str | None = None  # set when a CustomResourceDefinition defines it

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``plural.group``, as in the server's messages (``jobs.batch``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version

    def api_resources(self, version: str) -> list[dict[str, Any]]:
        """Entries for an APIResourceList: the resource and its subresources."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        for sub in sorted(self.subresources):
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def builtin_resources() -> list[ResourceDef]:
    """The built-in types a kopf operator, the job runner and kubectl need."""
    return [
        ResourceDef(
            "",
            ["v1"],
            "namespaces",
            "namespace",
            "Namespace",
            False,
            short_names=["ns"],
            subresources={"status"},
        ),
        ResourceDef("", ["v1"], "events", "event", "Event", True, short_names=["ev"]),
        ResourceDef("", ["v1"], "secrets", "secret", "Secret", True),
        ResourceDef("", ["v1"], "configmaps", "configmap", "ConfigMap", True, short_names=["cm"]),
        ResourceDef(
            "",
            ["v1"],
            "pods",
            "pod",
            "Pod",
            True,
            short_names=["po"],
            categories=["all"],
            subresources={"status"},
        ),
        ResourceDef(
            "",
            ["v1"],
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            short_names=["sa"],
        ),
        ResourceDef(
            "batch", ["v1"], "jobs", "job", "Job", True, categories=["all"], subresources={"status"}
        ),
        ResourceDef(
            "batch",
            ["v1"],
            "cronjobs",
            "cronjob",
            "CronJob",
            True,
            short_names=["cj"],
            categories=["all"],
            subresources={"status"},
        ),
        ResourceDef("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True),
        ResourceDef(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            short_names=["crd", "crds"],
            subresources={"status"},
        ),
        ResourceDef("events.k8s.io", ["v1"], "events", "event", "Event", True, short_names=["ev"]),
    ]


def resource_from_crd(crd: dict[str, Any]) -> ResourceDef:
    """Build the served resource from a CustomResourceDefinition (apiextensions/v1)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    # The storage version first: it is what the objects are kept in and what lists report.
    versions.sort(key=lambda v: not v.get("storage", False))
    subresources: set[str] = set()
    for version in versions:
        subresources.update((version.get("subresources") or {}).keys())
    kind = names.get("kind", "")
    return ResourceDef(
        group=spec.get("group", ""),
        versions=[v["name"] for v in versions],
        plural=names.get("plural", ""),
        singular=names.get("singular") or kind.lower(),
        kind=kind,
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        subresources=subresources,
        printer_columns={
            v["name"]: list(v.get("additionalPrinterColumns") or []) for v in versions
        },
        schemas={
            v["name"]: CrdSchema(schema)
            for v in versions
            if (schema := (v.get("schema") or {}).get("openAPIV3Schema"))
        },
        crd_name=(crd.get("metadata") or {}).get("name"),
    )

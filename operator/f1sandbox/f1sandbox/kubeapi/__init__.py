"""A Kubernetes API emulator: enough of the API server for kopf, kubectl and the client.

The tests run the real operator against it, and `f1sandbox demo` runs the whole product on
it with no cluster at all (with ``f1sandbox.jobrunner`` playing kubelet). It is no
substitute for a cluster (no RBAC, no scheduling, no resource limits): `make kind-up` is the
way to run on one. Run it as a process with ``f1sandbox kubeapi``.

Why a focused aiohttp server rather than kmock 0.8: kmock matches every request against
its whole recorded history (8 creates/s after 500 objects; 10,000 objects did not finish
in 8 minutes), stores objects as sent (no uid/resourceVersion/generation, which mixes up
kopf's per-uid state), has no selectors, no watch resume, no garbage collection, no
Tables and no CRD-driven discovery. Fixing that means replacing its storage, routing and
watch layers, i.e. most of it. This package keeps objects in dicts keyed by (resource,
namespace, name) with a bounded per-resource event history, so a request costs the same
with 10 or 10,000 objects. Like kmock, it lives outside the product (this development-only
distribution), so the operator's wheel and image do not carry it.

What it does (each with a test in tests/integration/test_kubeapi_*.py):

- discovery: /version, /api, /api/v1, /apis, /apis/G, /apis/G/V (plain lists; kubectl's
  aggregated-discovery Accept header is ignored and kubectl falls back to them);
- built-ins: namespaces, events, secrets, configmaps, pods, serviceaccounts (core/v1),
  jobs and cronjobs (batch/v1), leases, customresourcedefinitions, events.k8s.io events;
  creating a CRD serves its resource (and deleting it removes the resource and its objects);
- CRUD with uid, a global resourceVersion counter, creationTimestamp, generation (bumped on
  changes outside metadata and status), 409 on a stale resourceVersion, generateName,
  status subresource isolation, merge / JSON / strategic-merge (light) / server-side apply
  (approximated as merge) patches, a failed JSON-patch ``test`` as 422, no-op writes that
  keep the resourceVersion, finalizers with deletionTimestamp, DELETE of a collection,
  ownerReference garbage collection (background; Orphan honoured; Foreground acts as
  Background), namespace termination (its objects are deleted, creates in it get 403);
- CRD openAPIV3Schema pruning, defaulting and validation (422 with causes), including
  the ``self == oldSelf`` immutability rule, and strict field validation (400 naming the
  unknown fields): all by ``f1sandbox.crd``, the validator the tests check the CRD with;
- label and field selectors on LIST, WATCH and DELETE collection; limit/continue paging;
- WATCH with replay from a resourceVersion, 410 Gone once it is out of the bounded
  history, timeoutSeconds, bookmarks and sendInitialEvents;
- Table responses for kubectl, with a CRD's additionalPrinterColumns.

Limitations, on purpose: no authentication or RBAC (any token is accepted), no
admission webhooks, no OpenAPI documents (``kubectl apply --validate=false``); protobuf
request bodies are decoded only for the Namespace, ConfigMap, Secret and ServiceAccount
that ``kubectl create namespace|configmap|secret|serviceaccount`` send (other typed
``kubectl create`` generators get a 415; apply a manifest instead); responses are always
JSON. CEL rules other than ``self == oldSelf`` are not evaluated; built-in types are
validated only for names, labels and a Job's restartPolicy/containers; there is no
multi-version conversion (objects are served at any served version as stored); garbage
collection runs at once inside the owner's DELETE rather than a moment later; no Pods are
created for Jobs (``f1sandbox.jobrunner.JobRunner`` plays kubelet and Job controller in
one).
"""

from .server import KubeAPI, is_serving

__all__ = ["KubeAPI", "is_serving"]

"""The API emulator's fixtures (tests/support/kubeapi_fixtures.py), for every test here:
an emulator per test, its kubeconfig, the official client, the test CRD, a namespace and
kubectl. A test module may define a fixture of the same name to override one."""

from tests.support.kubeapi_fixtures import (  # noqa: F401  (fixtures, found by name)
    crd,
    k8s,
    kubeapi,
    kubeconfig,
    kubectl,
    namespace,
)

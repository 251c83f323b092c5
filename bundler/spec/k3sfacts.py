"""K3s release facts as pure functions: asset names per arch, release URLs, checksum files.

Asset naming from K3s's release scripts (scripts/package-cli, scripts/package-airgap):
amd64 -> ``k3s``, arm64 -> ``k3s-arm64``, arm -> ``k3s-armhf``; images and checksums use
``amd64``/``arm64``/``arm``. The ``+`` in a version is ``%2B`` in release URLs.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from bundler.errors import UpstreamError

BINARY_NAMES = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def binary_name(arch: str) -> str:
    return BINARY_NAMES[arch]


def airgap_images_name(arch: str) -> str:
    return f"k3s-airgap-images-{arch}.tar.zst"


def checksums_name(arch: str) -> str:
    return f"sha256sum-{arch}.txt"


def release_url(releases: str, version: str, asset: str) -> str:
    return f"{releases.rstrip('/')}/{quote(version, safe='')}/{asset}"


def parse_checksums(text: str, *, source: str) -> dict[str, str]:
    """Parse sha256sum output (``<hex>  <name>`` or ``<hex> *<name>``) into name -> hex."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not _HEX64.match(parts[0].lower()):
            raise UpstreamError(f"{source}: line {n} is not in sha256sum format: {line[:80]!r}")
        name = parts[1].strip().lstrip("*")
        out[name.rsplit("/", 1)[-1]] = parts[0].lower()
    return out


def checksum_for(checksums: dict[str, str], asset: str, *, source: str) -> str:
    try:
        return checksums[asset]
    except KeyError:
        raise UpstreamError(f"{source} has no checksum line for {asset}",
                            hint="the release is incomplete or the asset name is wrong; "
                                 "nothing unverified is locked") from None


def minor_of(version: str) -> tuple[int, int]:
    """``v1.34.3+k3s1`` -> (1, 34)."""
    m = re.match(r"^v?(\d+)\.(\d+)\.", version)
    if not m:
        raise ValueError(f"not a K3s version: {version!r}")
    return int(m.group(1)), int(m.group(2))


# ---------------------------------------------------------------------------- config.yaml keys
# The keys K3s accepts in config.yaml (and its config.yaml.d drop-ins): the long names of the
# flags of `k3s server` (which include every `k3s agent` flag) without the leading "--".
# Sources, read for this table:
# - k3s-io/k3s pkg/cli/cmds/server.go (ServerFlags) and pkg/cli/cmds/agent.go; the copy read
#   is a v1.31-era one (it has etcd-s3-proxy and etcd-s3-config-secret)
#   https://github.com/k3s-io/k3s/blob/release-1.34/pkg/cli/cmds/server.go
#   https://github.com/k3s-io/k3s/blob/release-1.34/pkg/cli/cmds/agent.go
# - the `k3s server --help` / `k3s agent --help` output in k3s-io/docs docs/cli/server.md and
#   docs/cli/agent.md (https://docs.k3s.io/cli/server, https://docs.k3s.io/cli/agent)
# - rancher/rke2 pkg/cli/cmds/server.go (urfave/cli v2, i.e. K3s >= v1.33), whose K3SFlagSet
#   must name every K3s server flag: it adds supervisor-port, apiserver-port,
#   apiserver-bind-address, etcd-snapshot-reconcile-interval, etcd-s3-bucket-lookup-type,
#   etcd-s3-session-token, secrets-encryption-provider and airgap-extra-registry.
# Hidden flags K3s still accepts (disable-agent, disable-apiserver, disable-controller-manager,
# disable-etcd, kine-tls, kube-controller-arg) are included; "config" is not (a config file
# cannot name another). A key may end in "+" to append to a list an earlier file set (K3s
# "Multiple Config Files"). Re-check against `k3s server --help` when adding a minor.
_AGENT_KEYS = frozenset("""
    token token-file server data-dir node-name with-node-id node-label node-taint
    image-credential-provider-bin-dir image-credential-provider-config selinux lb-server-port
    protect-kernel-defaults container-runtime-endpoint default-runtime image-service-endpoint
    pause-image snapshotter private-registry disable-default-registry-endpoint nonroot-devices
    node-ip bind-address node-external-ip node-internal-dns node-external-dns resolv-conf
    flannel-iface flannel-conf flannel-cni-conf kubelet-arg kube-proxy-arg enable-pprof
    rootless prefer-bundled-bin docker vpn-auth vpn-auth-file disable-apiserver-lb
    debug v vmodule log alsologtostderr
""".split())
_SERVER_KEYS = frozenset("""
    https-listen-port advertise-address advertise-port tls-san tls-san-security cluster-cidr
    service-cidr service-node-port-range cluster-dns cluster-domain flannel-backend
    flannel-ipv6-masq flannel-external-ip egress-selector-mode servicelb-namespace
    write-kubeconfig write-kubeconfig-mode write-kubeconfig-group helm-job-image agent-token
    agent-token-file cluster-init cluster-reset cluster-reset-restore-path kube-apiserver-arg
    etcd-arg kube-controller-manager-arg kube-scheduler-arg kube-cloud-controller-manager-arg
    kine-tls datastore-endpoint datastore-cafile datastore-certfile datastore-keyfile
    etcd-expose-metrics etcd-disable-snapshots etcd-snapshot-name etcd-snapshot-schedule-cron
    etcd-snapshot-retention etcd-snapshot-dir etcd-snapshot-compress etcd-s3 etcd-s3-endpoint
    etcd-s3-endpoint-ca etcd-s3-skip-ssl-verify etcd-s3-access-key etcd-s3-secret-key
    etcd-s3-bucket etcd-s3-region etcd-s3-folder etcd-s3-proxy etcd-s3-config-secret
    etcd-s3-insecure etcd-s3-timeout default-local-storage-path disable disable-scheduler
    disable-cloud-controller disable-kube-proxy disable-network-policy disable-helm-controller
    disable-apiserver disable-controller-manager disable-etcd embedded-registry
    supervisor-metrics system-default-registry secrets-encryption disable-agent
    kube-controller-arg kube-cloud-controller-arg
""".split())
_KEYS_1_31 = _AGENT_KEYS | _SERVER_KEYS
_KEYS_1_33 = _KEYS_1_31 | frozenset("""
    supervisor-port apiserver-port apiserver-bind-address etcd-snapshot-reconcile-interval
    etcd-s3-bucket-lookup-type etcd-s3-session-token secrets-encryption-provider
    airgap-extra-registry etcd-s3-retention
""".split())
# (major, minor) -> the keys of that K3s minor. No table: a bundle for that minor cannot carry
# k3s_config until one is added here.
CONFIG_KEYS: dict[tuple[int, int], frozenset[str]] = {
    (1, 31): _KEYS_1_31, (1, 32): _KEYS_1_31, (1, 33): _KEYS_1_33, (1, 34): _KEYS_1_33,
}
# Keys whose values are secrets: refused in a bundle (every copy of it would carry them); each
# has a *-file (or secret) counterpart that names where the device keeps it.
SECRET_KEYS = {"token": "token-file", "agent-token": "agent-token-file",
               "vpn-auth": "vpn-auth-file", "etcd-s3-secret-key": "etcd-s3-config-secret",
               "etcd-s3-session-token": "etcd-s3-config-secret"}


def config_keys(version: str) -> frozenset[str] | None:
    """The config.yaml keys of a K3s release's minor, or None when no table is kept for it."""
    return CONFIG_KEYS.get(minor_of(version))

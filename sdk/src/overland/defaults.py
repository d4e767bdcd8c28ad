"""What the services and their clients must agree on: ports, environment variable names and defaults.

The one home of these values. The services depend on the SDK (never the reverse), so both read them
from here, and a client on its defaults reaches a service on its defaults by construction. Constants
only: this module imports nothing, so that any process may read it before anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class ServiceDefaults:
    """One service's defaults: the port it listens on, its names, and its environment variables.

    ``address`` is both where the service binds when told nothing and where a client looks for it.
    """

    # The service's command-line name: ``python -m services.<name>``, ``overland <name> ...``.
    name: str
    port: int
    # OpenTelemetry's ``service.name`` of its spans and metrics.
    otel_name: str
    # Clients: host:port of the service.
    endpoint_env: str
    # The service: host:port to listen on, and its server TLS.
    bind_env: str
    tls_cert_env: str
    tls_key_env: str
    tls_client_ca_env: str
    # Serve plaintext beyond loopback anyway (1/true): without it, a non-loopback bind without TLS is
    # a configuration error.
    insecure_listen_env: str
    # Its metrics in the Prometheus format: host:port to serve them on (unset: not served), and the
    # port ``make run`` and deploy/k8s serve them on (one per service, so that a host runs all three).
    metrics_listen_env: str
    metrics_port: int

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def metrics_address(self) -> str:
        return f"{LOCALHOST}:{self.metrics_port}"


POLICY = ServiceDefaults(
    name="policy",
    port=50051,
    otel_name="overland-policy",
    endpoint_env="OVERLAND_POLICY_ENDPOINT",
    bind_env="OVERLAND_POLICY_BIND",
    tls_cert_env="OVERLAND_POLICY_TLS_CERT",
    tls_key_env="OVERLAND_POLICY_TLS_KEY",
    tls_client_ca_env="OVERLAND_POLICY_TLS_CLIENT_CA",
    insecure_listen_env="OVERLAND_POLICY_INSECURE_LISTEN",
    metrics_listen_env="OVERLAND_POLICY_METRICS_LISTEN",
    metrics_port=9464,
)
VSWITCH = ServiceDefaults(
    name="vswitch",
    port=50052,
    otel_name="overland-vswitch",
    endpoint_env="OVERLAND_VSWITCH_ENDPOINT",
    bind_env="OVERLAND_VSWITCH_BIND",
    tls_cert_env="OVERLAND_VSWITCH_TLS_CERT",
    tls_key_env="OVERLAND_VSWITCH_TLS_KEY",
    tls_client_ca_env="OVERLAND_VSWITCH_TLS_CLIENT_CA",
    insecure_listen_env="OVERLAND_VSWITCH_INSECURE_LISTEN",
    metrics_listen_env="OVERLAND_VSWITCH_METRICS_LISTEN",
    metrics_port=9465,
)
# One replica service process per site; the sites of one trace are told apart by their
# ``service.instance.id``, the site's name.
REPLICA = ServiceDefaults(
    name="replica",
    port=50053,
    otel_name="overland-replica",
    endpoint_env="OVERLAND_REPLICA_ENDPOINT",
    bind_env="OVERLAND_REPLICA_BIND",
    tls_cert_env="OVERLAND_REPLICA_TLS_CERT",
    tls_key_env="OVERLAND_REPLICA_TLS_KEY",
    tls_client_ca_env="OVERLAND_REPLICA_TLS_CLIENT_CA",
    insecure_listen_env="OVERLAND_REPLICA_INSECURE_LISTEN",
    metrics_listen_env="OVERLAND_REPLICA_METRICS_LISTEN",
    metrics_port=9466,
)
SERVICES = (POLICY, VSWITCH, REPLICA)
# ``python -m services.vswitch.datapath``: the datapath alone on a static table (benches, demos).
DATAPATH_OTEL_NAME = "overland-vswitch-datapath"

# -- limits ----------------------------------------------------------------------------------------

# What a client receives and any side sends: a watch response catching up on many revisions, or a
# vswitch DumpTable of a large table, can be larger than gRPC's default of 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# What a server accepts in one request message: no request needs more, and a larger one is refused
# (RESOURCE_EXHAUSTED) before it is buffered. The largest requests are the replica's delta batches:
# chunks of at most 1 MiB packed until a batch holds 1 MiB, so at most 2 MiB and their framing
# (services/replica/primary/chunking.py; tests/unit/replica checks the bound), and bulk-load messages,
# whose senders cut them far smaller (1000 records, about 100 KB).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Streaming calls a service serves at once (watches, delta transfers), each on a thread of its own
# beside the threads for unary calls; the next stream is refused with RESOURCE_EXHAUSTED.
STREAM_SLOTS = 256
# What the policy service holds for one WatchTable client that does not keep up, MiB, and how long
# it waits for one that reads nothing meanwhile, seconds: then the stream ends with RESOURCE_EXHAUSTED
# and the revision to resume from (docs/servers.md).
WATCH_BACKLOG_MIB = 4
WATCH_STALL_SECONDS = 5.0
# Virtual subnet ids: 24 bits, without the reserved 0x000000-0x000FFF and 0xFFFFFF (RFC 7637).
MIN_VSID = 0x1000
MAX_VSID = 0xFFFFFE

# -- machine-readable errors -----------------------------------------------------------------------

# A status that a client acts on by machine carries a google.rpc.ErrorInfo of this domain and reason.
ERROR_DOMAIN = "overland.v1"
# A WatchTable stream ended because its client fell too far behind: watch again with start_revision
# set to the ErrorInfo's metadata[RESUME_REVISION] (the SDK does so by itself).
WATCH_BACKLOG_EXCEEDED = "WATCH_BACKLOG_EXCEEDED"
RESUME_REVISION = "resume_revision"

# -- deadlines ---------------------------------------------------------------------------------------

# A client call's deadline, seconds.
CLIENT_TIMEOUT_SECONDS = 10.0
# Every etcd call's deadline, seconds. Long enough to ride out an etcd leader election (an election
# timeout of 1 s plus a campaign, slower on a loaded machine), which a 2 s deadline turned into
# failed writes; and well under the client's 10 s, so that a client whose call waits on a lost etcd
# gets the service's UNAVAILABLE naming etcd, not a bare DEADLINE_EXCEEDED of its own.
ETCD_TIMEOUT_SECONDS = 5.0
ETCD_ENDPOINT = f"{LOCALHOST}:2379"

# -- environment: clients (the SDK and the ``overland`` CLI) ------------------------------------------

TIMEOUT_ENV = "OVERLAND_TIMEOUT"
TLS_CA_ENV = "OVERLAND_TLS_CA"
TLS_CERT_ENV = "OVERLAND_TLS_CERT"
TLS_KEY_ENV = "OVERLAND_TLS_KEY"
TLS_SERVER_NAME_ENV = "OVERLAND_TLS_SERVER_NAME"

# -- environment: every service ---------------------------------------------------------------------

ETCD_ENDPOINTS_ENV = "OVERLAND_ETCD_ENDPOINTS"
ETCD_TIMEOUT_ENV = "OVERLAND_ETCD_TIMEOUT"
ETCD_CA_ENV = "OVERLAND_ETCD_CA"
ETCD_CERT_ENV = "OVERLAND_ETCD_CERT"
ETCD_KEY_ENV = "OVERLAND_ETCD_KEY"
# etcd authentication: the user, and its password from a file or (never a flag, which ``ps`` shows)
# from the environment.
ETCD_USER_ENV = "OVERLAND_ETCD_USER"
ETCD_PASSWORD_FILE_ENV = "OVERLAND_ETCD_PASSWORD_FILE"  # noqa: S105 - a variable name
ETCD_PASSWORD_ENV = "OVERLAND_ETCD_PASSWORD"  # noqa: S105 - a variable name
LOG_LEVEL_ENV = "OVERLAND_LOG_LEVEL"
LOG_JSON_ENV = "OVERLAND_LOG_JSON"
STREAM_SLOTS_ENV = "OVERLAND_STREAM_SLOTS"
# Telemetry: OTLP when the standard endpoint variable is set, else JSON-lines files (also read by
# ``overland trace``).
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
METRIC_INTERVAL_ENV = "OTEL_METRIC_EXPORT_INTERVAL"
SPAN_FILE_ENV = "OVERLAND_SPAN_FILE"
METRIC_FILE_ENV = "OVERLAND_METRIC_FILE"

# -- environment: one service's own settings ------------------------------------------------------------

POLICY_WORKERS_ENV = "OVERLAND_POLICY_WORKERS"
POLICY_WATCH_BACKLOG_ENV = "OVERLAND_POLICY_WATCH_BACKLOG_MIB"
POLICY_WATCH_STALL_ENV = "OVERLAND_POLICY_WATCH_STALL_SECONDS"
VSWITCH_HOST_NAME_ENV = "OVERLAND_VSWITCH_HOST_NAME"
VSWITCH_PA_IP_ENV = "OVERLAND_VSWITCH_PA_IP"
VSWITCH_PA_MTU_ENV = "OVERLAND_VSWITCH_PA_MTU"
VSWITCH_LEASE_TTL_ENV = "OVERLAND_VSWITCH_LEASE_TTL"
VSWITCH_PAGE_SIZE_ENV = "OVERLAND_VSWITCH_PAGE_SIZE"
VSWITCH_RDIDS_ENV = "OVERLAND_VSWITCH_RDIDS"
VSWITCH_TABLE_ONLY_ENV = "OVERLAND_VSWITCH_TABLE_ONLY"
VSWITCH_TABLE_SNAPSHOT_ENV = "OVERLAND_VSWITCH_TABLE_SNAPSHOT"
REPLICA_SITE_NAME_ENV = "OVERLAND_REPLICA_SITE_NAME"
REPLICA_STATE_DIR_ENV = "OVERLAND_REPLICA_STATE_DIR"
REPLICA_NBD_SOCKET_ENV = "OVERLAND_REPLICA_NBD_SOCKET"
REPLICA_GUEST_IMAGE_ENV = "OVERLAND_REPLICA_GUEST_IMAGE"
REPLICA_ACCEL_ENV = "OVERLAND_REPLICA_ACCEL"
REPLICA_VM_NETNS_ENV = "OVERLAND_REPLICA_VM_NETNS"
REPLICA_VSWITCH_ENDPOINT_ENV = "OVERLAND_REPLICA_VSWITCH_ENDPOINT"
# The site's TLS to its host's agent (which serves mutual TLS beyond loopback): the agent's CA, the
# site's client certificate (a host identity for this host: docs/security.md) and key, and the name
# the agent's certificate is checked against when the endpoint is an address it does not name.
REPLICA_VSWITCH_CA_ENV = "OVERLAND_REPLICA_VSWITCH_CA"
REPLICA_VSWITCH_CERT_ENV = "OVERLAND_REPLICA_VSWITCH_CERT"
REPLICA_VSWITCH_KEY_ENV = "OVERLAND_REPLICA_VSWITCH_KEY"
REPLICA_VSWITCH_SERVER_NAME_ENV = "OVERLAND_REPLICA_VSWITCH_SERVER_NAME"
REPLICA_SITE_ENDPOINT_ENV = "OVERLAND_REPLICA_SITE_ENDPOINT"
REPLICA_HOST_NAME_ENV = "OVERLAND_REPLICA_HOST_NAME"
REPLICA_POLICY_ENDPOINT_ENV = "OVERLAND_REPLICA_POLICY_ENDPOINT"
# A DR site without TLS takes the primary's name from a request header: by default only from loopback
# callers (anyone else could name any primary); 1/true takes it from anyone.
REPLICA_INSECURE_PRIMARY_HEADER_ENV = "OVERLAND_REPLICA_INSECURE_PRIMARY_HEADER"
# ``make run``: where the development stack keeps etcd's data, logs and spans.
STATE_DIR_ENV = "OVERLAND_STATE_DIR"

"""The listener and the bootstrap: what every gateway shares, checked by decoding (Envoy checks the rest)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2

from shardgate.xds import types, wildcard
from shardgate.xds.bootstrap import ADS_CLUSTER, bootstrap
from shardgate.xds.listeners import http_connection_manager, static_resources


def test_listener_selects_scope_by_authority_without_port() -> None:
    (res,) = static_resources("127.0.0.1", 18080)
    assert (res.type_url, res.name) == (types.LISTENER, "http")
    listener = listener_pb2.Listener.FromString(res.body)
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 18080
    (chain,) = listener.filter_chains
    (net_filter,) = chain.filters
    manager = hcm.HttpConnectionManager()
    assert net_filter.typed_config.Unpack(manager)
    scoped = manager.scoped_routes
    (fragment,) = scoped.scope_key_builder.fragments
    extractor = fragment.header_value_extractor
    assert (extractor.name, extractor.element_separator, extractor.index) == (wildcard.SCOPE_HEADER, ":", 0)
    assert scoped.scoped_rds.scoped_rds_config_source.HasField("ads")
    (early,) = manager.early_header_mutation_extensions
    mutation = header_mutation_pb2.HeaderMutation()
    assert early.typed_config.Unpack(mutation)
    (copy,) = mutation.mutations
    assert (copy.append.header.key, copy.append.header.value) == (wildcard.SCOPE_HEADER, "%REQ(:authority)%")
    assert copy.append.append_action == copy.append.OVERWRITE_IF_EXISTS_OR_ADD
    assert manager.scheme_header_transformation.scheme_to_overwrite == "http"
    assert manager.use_remote_address.value is True
    assert manager.stream_idle_timeout.seconds == 60
    assert [f.name for f in manager.http_filters] == [
        *[wildcard.FALLBACK_FILTER] * 3,
        "envoy.filters.http.rbac",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    # Enabled in the chain, steered per route: "disabled by default" is decided before the host fallback.
    assert not any(f.disabled for f in manager.http_filters)


def test_https_manager_differs_only_in_scheme_and_stat_prefix() -> None:
    plain = http_connection_manager("http", https=False)
    tls = http_connection_manager("https", https=True)
    assert tls.scheme_header_transformation.scheme_to_overwrite == "https"
    tls.scheme_header_transformation.scheme_to_overwrite = "http"
    tls.stat_prefix = "http"
    assert tls == plain


def test_listener_does_not_depend_on_anything_but_its_address() -> None:
    assert static_resources("0.0.0.0", 80)[0].version == static_resources("0.0.0.0", 80)[0].version
    assert static_resources("0.0.0.0", 80)[0].version != static_resources("0.0.0.0", 81)[0].version


def test_bootstrap() -> None:
    b = bootstrap(node_id="gw-1", ads_host="127.0.0.1", ads_port=18000, admin_port=19000, api_type="GRPC")
    assert b["node"] == {"id": "gw-1", "cluster": "shardgate-gateway"}
    assert b["admin"]["address"]["socket_address"]["port_value"] == 19000
    (ads,) = b["static_resources"]["clusters"]
    assert ads["name"] == ADS_CLUSTER
    endpoint = ads["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18000}
    dyn = b["dynamic_resources"]
    assert dyn["ads_config"]["api_type"] == "GRPC"
    (grpc,) = dyn["ads_config"]["grpc_services"]
    assert grpc["envoy_grpc"]["cluster_name"] == ADS_CLUSTER
    assert grpc["envoy_grpc"]["retry_policy"]["retry_back_off"]["max_interval"] == "1s"
    assert dyn["lds_config"] == dyn["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert (
        bootstrap(node_id="n", ads_host="h", ads_port=1, admin_port=2)["dynamic_resources"]["ads_config"][
            "api_type"
        ]
        == "DELTA_GRPC"
    )

"""The HTTPS listener and the SDS secret encoding, checked by decoding (real Envoy checks the rest).

The on-demand selector's config is hand-encoded (its message is not in the Python protos); here it is
decoded with message classes built at run time from the Envoy 1.40 schema, so a field number or type
mistake shows up as a wrong value, not as a silent Envoy default.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import config_source_pb2, extension_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from shardgate.merge import SecretConfig
from shardgate.xds import types
from shardgate.xds.secrets import has_certificate, secret_named, tls_secret
from shardgate.xds.tls import (
    NO_SNI,
    ON_DEMAND_SELECTOR,
    SNI_MAPPER,
    https_listener,
    https_listener_resource,
    on_demand_selector,
)

_F = descriptor_pb2.FieldDescriptorProto


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """Config (on_demand_secret.v3) and SNI (cert_mappers.sni.v3) as in the Envoy 1.40 API."""
    pool = descriptor_pool.DescriptorPool()
    for module in (config_source_pb2, extension_pb2):
        _add_with_deps(pool, module.DESCRIPTOR)
    f = descriptor_pb2.FileDescriptorProto(
        name="shardgate_test/on_demand.proto",
        package="test",
        syntax="proto3",
        dependency=[config_source_pb2.DESCRIPTOR.name, extension_pb2.DESCRIPTOR.name],
    )
    config = f.message_type.add(name="Config")
    config.field.add(
        name="config_source", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
        type_name=".envoy.config.core.v3.ConfigSource",
    )  # fmt: skip
    config.field.add(
        name="certificate_mapper", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
        type_name=".envoy.config.core.v3.TypedExtensionConfig",
    )  # fmt: skip
    config.field.add(name="prefetch_secret_names", number=3, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED)
    sni = f.message_type.add(name="SNI")
    sni.field.add(name="default_value", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    pool.Add(f)
    return {
        "Config": message_factory.GetMessageClass(pool.FindMessageTypeByName("test.Config")),
        "SNI": message_factory.GetMessageClass(pool.FindMessageTypeByName("test.SNI")),
    }


def _add_with_deps(pool: descriptor_pool.DescriptorPool, file: Any) -> None:
    for dep in file.dependencies:
        _add_with_deps(pool, dep)
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)


def tls_context(listener: listener_pb2.Listener) -> tls_pb2.DownstreamTlsContext:
    (chain,) = listener.filter_chains
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(ctx)
    return ctx


def test_https_listener_selects_certificates_on_demand_by_sni(schema: dict[str, Any]) -> None:
    manager = hcm.HttpConnectionManager(stat_prefix="https")
    listener = https_listener(manager, "127.0.0.1", 18443)
    assert listener.address.socket_address.port_value == 18443
    (chain,) = listener.filter_chains
    assert not chain.HasField("filter_chain_match")  # one chain: no per-domain anything
    (net_filter,) = chain.filters
    inner = hcm.HttpConnectionManager()
    assert net_filter.typed_config.Unpack(inner) and inner.stat_prefix == "https"

    ctx = tls_context(listener)
    assert ctx.disable_stateless_session_resumption and ctx.disable_stateful_session_resumption
    common = ctx.common_tls_context
    assert not common.tls_certificates and not common.tls_certificate_sds_secret_configs
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    selector = common.custom_tls_certificate_selector
    assert selector.name == ON_DEMAND_SELECTOR
    assert selector.typed_config.type_url.endswith("cert_selectors.on_demand_secret.v3.Config")

    config = schema["Config"].FromString(selector.typed_config.value)
    assert config.config_source.HasField("ads")
    assert config.config_source.resource_api_version == config_source_pb2.ApiVersion.V3
    assert config.certificate_mapper.name == SNI_MAPPER
    assert config.certificate_mapper.typed_config.type_url.endswith("cert_mappers.sni.v3.SNI")
    sni = schema["SNI"].FromString(config.certificate_mapper.typed_config.value)
    assert sni.default_value == NO_SNI
    assert list(config.prefetch_secret_names) == []


def test_prefetch_names_are_encoded(schema: dict[str, Any]) -> None:
    selector = on_demand_selector(["shop.example.com", "api.example.com"])
    config = schema["Config"].FromString(selector.typed_config.value)
    assert list(config.prefetch_secret_names) == ["shop.example.com", "api.example.com"]


def test_listener_is_the_same_whatever_the_hosts() -> None:
    """Nothing in it names a domain: adding a TLS host cannot change it (it is built only from these)."""
    manager = hcm.HttpConnectionManager(stat_prefix="https")
    a = https_listener_resource(manager, "0.0.0.0", 8443)
    b = https_listener_resource(manager, "0.0.0.0", 8443)
    assert (a.type_url, a.name) == (types.LISTENER, "https")
    assert a.version == b.version
    assert a.version != https_listener_resource(manager, "0.0.0.0", 8444).version


def test_secret_renamed_to_the_sni_keeps_its_certificate() -> None:
    body = tls_secret(SecretConfig("shop", "wild-tls", b"CERT", b"KEY")).SerializeToString(deterministic=True)
    for sni in ("a.wild.example.com", "b.wild.example.com", "x" * 300 + ".example.com"):
        renamed = secret_pb2.Secret.FromString(secret_named(body, sni))
        assert renamed.name == sni
        assert renamed.tls_certificate.certificate_chain.inline_bytes == b"CERT"
        assert renamed.tls_certificate.private_key.inline_bytes == b"KEY"
    assert has_certificate(body)


def test_unusable_secret_compiles_without_certificate() -> None:
    secret = tls_secret(SecretConfig("shop", "broken", b"", b""))
    assert secret.name == "shop/broken" and not secret.HasField("tls_certificate")
    assert not has_certificate(secret.SerializeToString())
    assert not has_certificate(b"\xff\xff")

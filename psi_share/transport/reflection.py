"""gRPC server reflection under both names clients use: v1 and v1alpha.

``grpcio-reflection`` 1.72.2 (pinned: later versions ship protobuf gencode
the pinned runtime refuses) serves only ``grpc.reflection.v1alpha``; current
grpcurl, Postman and grpc-js tooling ask ``grpc.reflection.v1`` first. The
two protos (grpc/reflection/v1/reflection.proto and its v1alpha ancestor)
declare the same messages with the same field names, numbers and types;
only the package differs, and the package never appears in message bytes,
only in the method path. So the v1 service is the v1alpha servicer
registered under the v1 path, with the v1alpha message classes as codecs.

For reflection to describe the v1 service itself, its file is added to the
default descriptor pool: the v1alpha file with the package renamed (the
same derivation as upstream's, which copied v1alpha).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = proto.package, "grpc.reflection.v1"
    proto.name, proto.package = _V1_FILE, new
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # message-typed fields only
                field.type_name = field.type_name.replace(f".{old}.", f".{new}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", f".{new}.")
            method.output_type = method.output_type.replace(f".{old}.", f".{new}.")
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(server: grpc.Server, service_names: Sequence[str]) -> None:
    """Serve reflection for ``service_names`` (plus both reflection services) under v1 and v1alpha."""
    _register_v1_descriptor()
    names = (*service_names, V1_SERVICE, V1ALPHA_SERVICE)
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))

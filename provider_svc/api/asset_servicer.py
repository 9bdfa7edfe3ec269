"""AssetService: DDOs in and out as google.protobuf.Struct; publishing is signed by the publisher."""

from __future__ import annotations

import grpc
from google.protobuf import json_format, struct_pb2

from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2, service_pb2_grpc
from c2d_common.errors import InvalidArgument
from c2d_common.ids import check_address
from provider_svc.domain.assets import AssetStore
from provider_svc.domain.auth import Authenticator

PUBLISH = str(
    service_pb2.DESCRIPTOR.services_by_name["AssetService"].methods_by_name["PublishAsset"].full_name
)


class AssetServicer(service_pb2_grpc.AssetServiceServicer):
    def __init__(self, assets: AssetStore, auth: Authenticator):
        self.assets = assets
        self.auth = auth

    async def PublishAsset(
        self, request: pb.PublishAssetRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishAssetResponse:
        publisher = check_address(request.publisher_address, "publisher_address")
        if not request.HasField("ddo"):
            raise InvalidArgument("ddo is required")
        try:
            ddo = json_format.MessageToDict(request.ddo)
        except ValueError:
            raise InvalidArgument("invalid DDO: it holds NaN or Infinity, which JSON cannot carry") from None
        publisher = await self.auth.authenticate(PUBLISH, request, publisher)
        asset = self.assets.publish(publisher, ddo)
        return pb.PublishAssetResponse(did=asset.did)

    async def GetAsset(
        self, request: pb.GetAssetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAssetResponse:
        asset = self.assets.get(request.did)
        ddo = struct_pb2.Struct()
        ddo.update(asset.public_ddo())
        response = pb.GetAssetResponse(ddo=ddo)
        if asset.type == "algorithm":
            checksums = asset.checksums()
            response.files_checksum = checksums.files
            response.container_section_checksum = checksums.container
        return response

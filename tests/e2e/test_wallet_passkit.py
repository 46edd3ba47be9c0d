"""The wallet process of the local stack: a pass issued over gRPC is listed by the gateway's
GraphQL and fetched by a phone from the PassKit web service on its own port, signed with the
stack's dev certificates."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import grpc
import httpx
import pytest

from infra.local.stack import DEV_PASS_TYPE_ID
from lodestar.v1 import wallet_pb2, wallet_pb2_grpc
from tests.support.kafka import unique
from tests.support.platform import Platform
from tests.support.wallet import manifest_problems, pass_problems, verify_signature

pytestmark = pytest.mark.e2e


async def test_issue_register_and_download_through_the_stack(
    platform: Platform, tmp_path: Path
) -> None:
    stack = platform.stack
    user = unique("holder")
    customer_id = await platform.known_customer(user)
    async with stack.grpc_channel("wallet") as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        issued = await stub.IssuePass(
            wallet_pb2.IssuePassRequest(
                customer_id=customer_id, kind=wallet_pb2.PASS_KIND_STORE_CARD
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.IssuePass(
                wallet_pb2.IssuePassRequest(
                    customer_id=unique("nobody"), kind=wallet_pb2.PASS_KIND_STORE_CARD
                )
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "not known to identity" in str(unknown.value.details())
    assert issued.pass_type_id == DEV_PASS_TYPE_ID
    assert issued.web_service_url == stack.passkit_url
    listed = (
        await platform.graphql(
            'query($v: String!) { customer(by: {identifier: {type: "user_id", value: $v}}) '
            "{ walletPasses { serialNumber kind platform } } }",
            {"v": user},
        )
    ).json()
    card = {"serialNumber": issued.serial_number, "kind": "STORE_CARD", "platform": "APPLE"}
    assert listed == {"data": {"customer": {"walletPasses": [card]}}}, listed
    headers = {"Authorization": f"ApplePass {issued.authentication_token}"}
    async with httpx.AsyncClient(base_url=issued.web_service_url, timeout=10) as phone:
        registered = await phone.post(
            f"/v1/devices/e2edevice/registrations/{DEV_PASS_TYPE_ID}/{issued.serial_number}",
            json={"pushToken": "e2etoken"},
            headers=headers,
        )
        assert registered.status_code == 201
        fetched = await phone.get(
            f"/v1/passes/{DEV_PASS_TYPE_ID}/{issued.serial_number}", headers=headers
        )
    assert fetched.status_code == 200
    with zipfile.ZipFile(io.BytesIO(fetched.content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert manifest_problems(files) == []
    assert pass_problems(json.loads(files["pass.json"])) == []
    verified = verify_signature(files, stack.wallet_certs_dir / "wwdr.pem", tmp_path)
    assert verified.returncode == 0, verified.stderr

"""The admin API driven by AWS's own Lambda client (boto3): the operations it implements, signed with SigV4
using the admin token as the secret access key, against a real admin listener on 127.0.0.1."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import run_edgefn
from tests.servers import edge_server

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never look for credentials off this machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = tmp_path_factory.mktemp("boto") / "app"
    assert run_edgefn("init", str(app), "--triggers", "viewer-request").returncode == 0
    with edge_server(app / "edgefn.toml", tls=False) as running:
        yield running


def client(server, secret: str):
    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return boto3.client(
        "lambda", endpoint_url=server.admin, region_name="us-east-1", aws_access_key_id="edgefn", aws_secret_access_key=secret, config=config,
    )


@pytest.fixture(scope="module")
def lam(server):
    return client(server, server.admin_token)


def test_list_and_get_functions(lam):
    listed = lam.list_functions()
    names = sorted(f["FunctionName"] for f in listed["Functions"])
    assert names == ["origin", "viewer-request"]
    got = lam.get_function(FunctionName="origin")
    assert got["Configuration"]["FunctionName"] == "origin" and got["Configuration"]["Version"] == "$LATEST"
    assert got["Configuration"]["MemorySize"] == 16


def test_invoke(lam):
    event = {"Records": [{"cf": {"config": {"eventType": "origin-request"}, "request": {"method": "GET", "uri": "/from-boto3", "headers": {}}}}]}
    out = lam.invoke(FunctionName="origin", Payload=json.dumps(event).encode())
    assert out["StatusCode"] == 200 and "FunctionError" not in out
    result = json.loads(out["Payload"].read())
    assert str(result["status"]) == "200" and "/from-boto3" in result["body"]["data"]


def test_versions_aliases_and_concurrency(lam):
    v1 = lam.publish_version(FunctionName="origin", Description="first")
    assert v1["Version"] == "1"
    alias = lam.create_alias(FunctionName="origin", Name="live", FunctionVersion="1", Description="production")
    assert alias["Name"] == "live" and alias["FunctionVersion"] == "1"
    v2 = lam.publish_version(FunctionName="viewer-request")
    assert v2["Version"] == "1"
    moved = lam.update_alias(FunctionName="origin", Name="live", FunctionVersion="1", Description="still 1")
    assert moved["Description"] == "still 1"
    put = lam.put_function_concurrency(FunctionName="origin", ReservedConcurrentExecutions=5)
    assert put["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName="origin")["ReservedConcurrentExecutions"] == 5
    invoked = lam.invoke(FunctionName="origin", Qualifier="live", Payload=b'{"request": {"uri": "/via-alias"}}')
    assert invoked["ExecutedVersion"] == "1" and b"/via-alias" in invoked["Payload"].read()


def test_a_wrong_secret_is_refused(server):
    with pytest.raises(ClientError) as refused:
        client(server, "not-the-token").list_functions()
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_an_unknown_function_is_lambdas_not_found(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="nope")


def _signed(url: str, body: bytes, secret: str):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials("edgefn", secret), "lambda", "us-east-1").add_auth(request)
    return request


def test_a_signed_request_cannot_be_changed_or_replayed_later(server):
    import httpx

    url = f"{server.admin}/2015-03-31/functions/origin/invocations"
    body = b'{"request": {"uri": "/signed"}}'
    request = _signed(url, body, server.admin_token)
    headers = dict(request.headers.items())
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    tampered = httpx.post(url, content=body.replace(b"/signed", b"/evil"), headers=headers)
    assert tampered.status_code == 401  # the body is part of what was signed

    from datetime import datetime, timedelta, timezone

    from edgefn.admin.auth import sigv4_valid

    scope = {
        "method": "POST", "raw_path": b"/2015-03-31/functions/origin/invocations", "path": "/2015-03-31/functions/origin/invocations",
        "query_string": b"", "headers": [(b"host", url.split("/")[2].encode()), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
    }
    signed_at = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert sigv4_valid(scope, headers["Authorization"], body, server.admin_token, now=signed_at + timedelta(minutes=14))
    assert not sigv4_valid(scope, headers["Authorization"], body, server.admin_token, now=signed_at + timedelta(minutes=16))
    assert not sigv4_valid(scope, headers["Authorization"], body, "another-token", now=signed_at)

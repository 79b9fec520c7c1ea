"""The admin/invoke API (Lambda's wire format) on its own listener of a real `edgefn serve`, with real C guests."""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from edgefn.admin import app as api
from edgefn.admin import openapi
from tests.servers import REPO, edge_server, free_port

GUESTS = REPO / "tests" / "guests" / "c"
TOKEN = secrets.token_urlsafe(24)
F = "/2015-03-31/functions"


def manifest(extra: str = "", only_echo: bool = False) -> str:
    echo = f"""
[app]
name = "admin-api"
{extra}
[functions.echo]
source = "{GUESTS / 'echo.c'}"
[default_behavior]
function = "echo"
"""
    if only_echo:
        return echo
    return echo + f"""
[functions.limited]
source = "{GUESTS / 'echo.c'}"
[functions.failer]
source = "{GUESTS / 'rulebreaker.c'}"
[functions.crash]
source = "{GUESTS / 'trap.c'}"
[functions.greeter]
source = "{GUESTS / 'env.c'}"
env = {{ GREETING = "first" }}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tmp_path_factory.mktemp("admin") / "edgefn.toml"
    config.write_text(manifest())
    with edge_server(config, tls=False, env={"EDGEFN_ADMIN_TOKEN": TOKEN}) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server):
    with httpx.Client(base_url=server.admin, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield client


def invoke(admin: httpx.Client, ref: str, payload: object = None, **headers: str) -> httpx.Response:
    body = {"request": {"uri": "/hello", "body": {"data": "ping"}}} if payload is None else payload
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    return admin.post(f"{F}/{ref}/invocations", headers=headers, **kw)


# --- the route table and its description -----------------------------------------------------------


def test_every_route_is_in_the_openapi_document_and_vice_versa():
    # a Starlette converter ({key:path}: the key may hold '/') is a plain {key} parameter in OpenAPI
    served = {(re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path), m.lower()) for r in api.ROUTES if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    described = {(path, method) for path, ops in openapi.document()["paths"].items() for method in ops}
    assert served == described


def test_the_served_openapi_document_is_the_one_in_the_code(admin):
    r = admin.get("/openapi.json")
    assert r.status_code == 200 and r.json() == openapi.document()
    assert TOKEN not in r.text


# --- auth ------------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_and_says_nothing_about_the_path(server, admin):
    missing = httpx.get(f"{server.admin}{F}/")
    wrong = httpx.get(f"{server.admin}{F}/", headers={"authorization": "Bearer not-the-token"})
    unknown_path = httpx.get(f"{server.admin}/no/such/path", headers={"authorization": "Bearer not-the-token"})
    for r in (missing, wrong, unknown_path):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert missing.content == wrong.content == unknown_path.content
    assert "echo" not in unknown_path.text and "no/such" not in unknown_path.text
    assert admin.get(f"{F}/").status_code == 200
    assert admin.get("/no/such/path").status_code == 404  # with the token, routing happens


def test_the_admin_api_is_not_on_the_edge_port(server):
    r = httpx.get(f"{server.base}{F}/", headers={"authorization": f"Bearer {TOKEN}"})
    assert "Functions" not in r.text  # the edge app routed it to the echo function instead


# --- invoke ----------------------------------------------------------------------------------------


def test_sync_invoke_returns_the_result_executed_version_and_log_tail(admin):
    r = invoke(admin, "echo", **{"X-Amz-Log-Type": "Tail"})
    assert r.status_code == 200
    assert r.headers["x-amz-executed-version"] == "$LATEST"
    assert "x-amz-function-error" not in r.headers
    doc = r.json()
    assert doc["status"] == 200 and doc["body"]["data"] == "ping"
    rid = r.headers["x-amzn-requestid"]
    log = base64.b64decode(r.headers["x-amz-log-result"]).decode()
    assert log.startswith(f"START RequestId: {rid} Version: $LATEST\n")
    assert f"END RequestId: {rid}\n" in log and f"REPORT RequestId: {rid}\t" in log
    assert "x-amz-log-result" not in invoke(admin, "echo").headers  # only when asked for


def test_function_errors_are_200_with_handled_or_unhandled(admin):
    handled = invoke(admin, "failer")  # rulebreaker without MODE returns a function error on purpose
    assert handled.status_code == 200 and handled.headers["x-amz-function-error"] == "Handled"
    assert handled.json() == {"errorType": "ConfigurationError", "errorMessage": "set env MODE"}
    unhandled = invoke(admin, "crash", **{"X-Amz-Log-Type": "Tail"})
    assert unhandled.status_code == 200 and unhandled.headers["x-amz-function-error"] == "Unhandled"
    assert unhandled.json()["errorType"] == "GuestTrap" and "unreachable" in unhandled.json()["errorMessage"]
    assert "Outcome: trap" in base64.b64decode(unhandled.headers["x-amz-log-result"]).decode()


def test_dry_run_validates_without_running(admin, server):
    r = invoke(admin, "echo", **{"X-Amz-Invocation-Type": "DryRun"})
    assert r.status_code == 204 and r.headers["x-amzn-requestid"]
    assert f"START RequestId: {r.headers['x-amzn-requestid']}" not in server.log.read_text()
    assert invoke(admin, "nope", **{"X-Amz-Invocation-Type": "DryRun"}).status_code == 404
    assert invoke(admin, "echo", b"{", **{"X-Amz-Invocation-Type": "DryRun"}).status_code == 400


def test_event_invocation_is_queued_once_per_invocation_id(admin):
    first = invoke(admin, "echo", **{"X-Amz-Invocation-Type": "Event", "X-Amz-Invocation-Id": "admin-api-test-1"})
    again = invoke(admin, "echo", **{"X-Amz-Invocation-Type": "Event", "X-Amz-Invocation-Id": "admin-api-test-1"})
    assert first.status_code == again.status_code == 202
    assert first.headers["x-amzn-requestid"] == again.headers["x-amzn-requestid"]
    assert "x-edgefn-duplicate" not in first.headers and again.headers["x-edgefn-duplicate"] == "true"


def test_payload_over_6_mb_is_413(admin):
    big = b"x" * (api.SYNC_PAYLOAD_LIMIT + 1)
    declared = invoke(admin, "echo", big)
    assert declared.status_code == 413 and declared.headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    streamed = admin.post(f"{F}/echo/invocations", content=iter([big[: 4 << 20], big[4 << 20 :]]))  # chunked: no length
    assert streamed.status_code == 413 and "6291456" in streamed.json()["Message"]


def test_unknown_function_or_qualifier_is_404(admin):
    for ref in ("nope", "echo:7", "echo:nosuchalias"):
        r = invoke(admin, ref)
        assert r.status_code == 404, ref
        assert r.headers["x-amzn-errortype"] == "ResourceNotFoundException"
        assert r.json()["Type"] == "User"
    assert admin.get(f"{F}/nope").status_code == 404


def test_bad_payload_is_400(admin):
    cases = [b"not json", b"[1, 2]", b'{"config": {}}', b'{"config": {"eventType": "viewer-response"}, "request": {}}']
    for payload in cases:
        r = invoke(admin, "echo", payload)
        assert r.status_code == 400, payload
        assert r.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert "needs a \"response\"" in invoke(admin, "echo", cases[-1]).json()["Message"]


def test_reserved_concurrency_zero_throttles_with_429(admin):
    assert admin.put("/2017-10-31/functions/limited/concurrency", json={"ReservedConcurrentExecutions": 0}).status_code == 200
    assert admin.get("/2017-10-31/functions/limited/concurrency").json() == {"ReservedConcurrentExecutions": 0}
    r = invoke(admin, "limited")
    assert r.status_code == 429 and r.headers["retry-after"]
    assert r.json() == {"Type": "User", "message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
    assert admin.delete("/2017-10-31/functions/limited/concurrency").status_code == 204
    assert admin.get("/2017-10-31/functions/limited/concurrency").json() == {}
    # a reservation the servers would refuse to apply (under 10% of max_concurrency left) is refused at once
    too_much = admin.put("/2017-10-31/functions/limited/concurrency", json={"ReservedConcurrentExecutions": 901})
    assert too_much.status_code == 400 and "at least 100 (10%) must stay unreserved" in too_much.json()["Message"]
    assert admin.get("/2017-10-31/functions/limited/concurrency").json() == {}
    assert invoke(admin, "limited").status_code == 200


# --- versions, aliases, configuration --------------------------------------------------------------


def test_publish_and_alias_through_the_api_then_invoke_the_alias(admin):
    v1 = admin.post(f"{F}/greeter/versions", json={"Description": "first"})
    assert v1.status_code == 201
    n1 = v1.json()["Version"]
    changed = admin.put(f"{F}/greeter/configuration", json={"Environment": {"Variables": {"GREETING": "second"}}, "Timeout": 1.5})
    assert changed.status_code == 200 and changed.json()["Timeout"] == 1.5
    n2 = admin.post(f"{F}/greeter/versions", json={}).json()["Version"]
    assert n2 != n1
    assert "GREETING=second" in invoke(admin, "greeter").json()["body"]["data"]  # $LATEST changed at once

    created = admin.post(f"{F}/greeter/aliases", json={"Name": "live", "FunctionVersion": n1})
    assert created.status_code == 201 and created.json()["FunctionVersion"] == n1
    assert admin.post(f"{F}/greeter/aliases", json={"Name": "live", "FunctionVersion": n1}).status_code == 409
    r = invoke(admin, "greeter:live")
    assert r.headers["x-amz-executed-version"] == n1 and "GREETING=first" in r.json()["body"]["data"]

    assert admin.put(f"{F}/greeter/aliases/live", json={"FunctionVersion": n2}).status_code == 200
    r = admin.post(f"{F}/greeter/invocations", params={"Qualifier": "live"}, json={"request": {}})
    assert r.headers["x-amz-executed-version"] == n2 and "GREETING=second" in r.json()["body"]["data"]

    two_extra = admin.put(f"{F}/greeter/aliases/live", json={"RoutingConfig": {"AdditionalVersionWeights": {n1: 0.1, "9": 0.1}}})
    assert two_extra.status_code == 400 and "at most two versions" in two_extra.json()["Message"]
    weighted = admin.put(f"{F}/greeter/aliases/live", json={"RoutingConfig": {"AdditionalVersionWeights": {n1: 0.25}}})
    assert weighted.json()["RoutingConfig"] == {"AdditionalVersionWeights": {n1: 0.25}}
    view = admin.get(f"{F}/greeter").json()
    assert [v["Version"] for v in view["Versions"]] == [n1, n2]
    assert view["Aliases"][0]["Name"] == "live" and view["Configuration"]["Environment"]["Variables"] == {"GREETING": "second"}
    assert admin.delete(f"{F}/greeter/aliases/live").status_code == 204
    assert invoke(admin, "greeter:live").status_code == 404


def test_configuration_update_is_checked_with_the_manifest_rules(admin):
    r = admin.put(f"{F}/echo/configuration", json={"MemorySize": 0})
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "InvalidParameterValueException"
    message = r.json()["Message"]
    assert message.startswith("MemorySize: ") and "functions.echo.memory_mb: bad value 0" in message and "an integer from 1 to 10,240" in message
    unknown = admin.put(f"{F}/echo/configuration", json={"Memory": 64})
    assert unknown.status_code == 400 and "unknown field 'Memory'" in unknown.json()["Message"]
    prewarm = admin.put(f"{F}/echo/configuration", json={"Prewarm": 2})
    assert prewarm.status_code == 400 and "ReuseInstances" in prewarm.json()["Message"]
    assert admin.get(f"{F}/echo").json()["Configuration"]["MemorySize"] == 128  # nothing was written


def test_provisioned_concurrency_on_a_version(admin):
    n = admin.post(f"{F}/echo/versions", json={}).json()["Version"]
    url = "/2019-09-30/functions/echo/provisioned-concurrency"
    assert admin.put(url, json={"ProvisionedConcurrentExecutions": 1}).status_code == 400  # Qualifier is required
    assert admin.put(url, params={"Qualifier": n}, json={"ProvisionedConcurrentExecutions": 1}).status_code == 202
    assert admin.get(url, params={"Qualifier": n}).json() == {"RequestedProvisionedConcurrentExecutions": 1}
    assert admin.get(f"{F}/echo").json()["ProvisionedConcurrency"] == {n: 1}
    assert admin.delete(url, params={"Qualifier": n}).status_code == 204
    assert admin.get(url, params={"Qualifier": n}).status_code == 404


# --- no token --------------------------------------------------------------------------------------


def test_first_start_generates_an_owner_only_token_printed_once_and_read_by_the_cli(tmp_path):
    token_env = "EDGEFN_TEST_ADMIN_TOKEN_NEVER_SET"
    assert token_env not in os.environ
    config = tmp_path / "edgefn.toml"
    config.write_text(manifest(f'[admin]\ntoken_env = "{token_env}"\n', only_echo=True))
    with edge_server(config, tls=False) as srv:
        token_file = tmp_path / ".edgefn" / "admin-token"
        token = token_file.read_text().strip()
        assert len(token) >= 40 and token_file.stat().st_mode & 0o777 == 0o600
        assert f"admin token generated (shown once, kept owner-only in {token_file}): {token}" in srv.log.read_text()
        assert httpx.post(f"{srv.admin}{F}/echo/invocations", json={"request": {}}).status_code == 401
        ok = httpx.post(f"{srv.admin}{F}/echo/invocations", json={"request": {}}, headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        printed = subprocess.run(
            [sys.executable, "-m", "edgefn.cli", "admin", "token", "--config", str(config)], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert printed.returncode == 0 and printed.stdout.strip() == token
    with edge_server(config, tls=False) as again:  # the same token on the next start, never printed again
        assert token not in again.log.read_text() and "admin token generated" not in again.log.read_text()
        assert httpx.get(f"{again.admin}/metrics", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_loopback_with_admin_no_token_serves_unauthenticated_from_every_worker(tmp_path):
    token_env = "EDGEFN_TEST_ADMIN_TOKEN_NEVER_SET"
    assert token_env not in os.environ
    config = tmp_path / "edgefn.toml"
    config.write_text(manifest(f'[admin]\ntoken_env = "{token_env}"\n', only_echo=True))
    with edge_server(config, "--workers", "2", "--admin-no-token", tls=False) as srv:
        # both worker processes listen on the admin port (SO_REUSEPORT): fresh connections all get answers
        for _ in range(12):
            r = httpx.post(f"{srv.admin}{F}/echo/invocations", json={"request": {}})
            assert r.status_code == 200 and r.headers["x-amz-executed-version"] == "$LATEST"
        assert "bad value" in httpx.put(f"{srv.admin}{F}/echo/configuration", json={"Fuel": 1}).json()["Message"]


def test_non_loopback_host_with_admin_no_token_refuses_to_start(tmp_path):
    token_env = "EDGEFN_TEST_ADMIN_TOKEN_NEVER_SET"
    config = tmp_path / "edgefn.toml"
    config.write_text(manifest(f'[admin]\nhost = "0.0.0.0"\ntoken_env = "{token_env}"\n', only_echo=True))
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "edgefn.cli", "serve", "--config", str(config), "--port", str(port), "--tls-port", "0", "--admin-port", str(free_port()), "--admin-no-token"],
        capture_output=True, text=True, cwd=REPO, timeout=60, env={k: v for k, v in os.environ.items() if k != token_env},
    )
    assert done.returncode != 0
    assert "admin.host = '0.0.0.0'" in done.stderr and "--admin-no-token" in done.stderr and "admin.token_env" in done.stderr
    assert "listening on" not in done.stderr and "serving" not in done.stderr and "admin API on" not in done.stderr
    assert not (Path(config).parent / ".edgefn").exists()  # it stopped before building or deploying anything


def test_json_nested_100000_deep_is_a_400_not_a_500(admin):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"request": ' + b"[" * 70 + b"]" * 70 + b"}"):
        r = admin.post(f"{F}/echo/invocations", content=body)
        assert r.status_code == 400 and "nested deeper than 64" in r.json()["Message"]
    r = admin.put(f"{F}/echo/configuration", content=b'{"Environment": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert r.status_code == 400 and "nested deeper than 64" in r.json()["Message"]
    assert admin.post(f"{F}/echo/invocations", json={"request": {}}).status_code == 200  # and it keeps serving


def test_the_fuel_in_force_follows_memory_size_until_fuel_is_set(admin):
    """A function that sets no Fuel gets the budget its MemorySize buys (docs/security.md); an explicit Fuel wins."""
    assert admin.get(f"{F}/limited").json()["Configuration"]["Fuel"] == 2_000_000_000
    doubled = admin.put(f"{F}/limited/configuration", json={"MemorySize": 256})
    assert doubled.status_code == 200 and (doubled.json()["MemorySize"], doubled.json()["Fuel"]) == (256, 4_000_000_000)
    pinned = admin.put(f"{F}/limited/configuration", json={"Fuel": 3_000_000, "MemorySize": 512})
    assert (pinned.json()["MemorySize"], pinned.json()["Fuel"]) == (512, 3_000_000)
    assert invoke(admin, "limited").status_code == 200

"""What a guest can reach: edgefn:host/v1 log and env_get, and WASI preview1 with least privilege."""

from __future__ import annotations

import logging

import pytest

from edgefn.core.app import FunctionSpec
from edgefn.core.events import EdgeResponse
from tests.conftest import log_lines, make_event, wat_guest

LOG_IMPORT = '(import "edgefn:host/v1" "log" (func $log (param i32 i32 i32)))'
ENV_IMPORT = '(import "edgefn:host/v1" "env_get" (func $env_get (param i32 i32 i32 i32) (result i32)))'

# {"status": 200, "body": h'<len at 32>'} — prefix at 16, the byte-string length at 32, the value from 33
ENV_DATA = r'(data (i32.const 16) "\a2\66status\18\c8\64body\58") (data (i32.const 100) "{key}")'
ENV_HANDLE = """
  (local $n i32)
  (local.set $n (call $env_get (i32.const 100) (i32.const {klen}) (i32.const 33) (i32.const 200)))
  (if (i32.lt_s (local.get $n) (i32.const 0))
    (then (i32.store8 (i32.const 25) (i32.const 204)) (local.set $n (i32.const 0))))
  (i32.store8 (i32.const 32) (local.get $n))
  (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.extend_i32_u (i32.add (i32.const 17) (local.get $n))))"""


def env_guest(key: str) -> bytes:
    return wat_guest(ENV_HANDLE.format(klen=len(key)), extra=ENV_DATA.format(key=key), imports=ENV_IMPORT)


def test_env_get_reads_the_functions_own_env(runtime, deploy):
    fn = deploy(env_guest("GREETING"), env={"GREETING": "hola, mundo", "OTHER": "x"})
    result = runtime.invoker.invoke_sync(fn, make_event()).result
    assert isinstance(result, EdgeResponse)
    assert (result.status, result.body.data) == (200, b"hola, mundo")


def test_env_get_of_an_unset_variable_returns_minus_one(runtime, deploy):
    fn = deploy(env_guest("MISSING"), env={"GREETING": "hi"})
    result = runtime.invoker.invoke_sync(fn, make_event()).result
    assert (result.status, result.body.data) == (204, b"")


def test_env_get_never_sees_the_host_environment(runtime, deploy, monkeypatch):
    monkeypatch.setenv("EDGEFN_SECRET_OF_THE_HOST", "leak")
    fn = deploy(env_guest("EDGEFN_SECRET_OF_THE_HOST"))
    assert runtime.invoker.invoke_sync(fn, make_event()).result.status == 204


# env_get's answer as the status (210 + n): the key "GREETING" at 100, the arguments as given
ENV_CODE_DATA = r'(data (i32.const 16) "\a1\66status\18\c8") (data (i32.const 100) "GREETING")'
ENV_CODE_HANDLE = """
  (i32.store8 (i32.const 25) (i32.add (i32.const 210)
    (call $env_get (i32.const {key_ptr}) (i32.const {key_len}) (i32.const {buf_ptr}) (i32.const {buf_cap}))))
  (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"""


@pytest.mark.parametrize(
    ("key_ptr", "key_len", "buf_ptr", "buf_cap", "answer"),
    [
        (100, 8, 300, 64, 11),  # found: its length, copied
        (100, 8, 300, 4, 11),  # found, but the buffer is too small: its length (the SDK retries), nothing copied
        (100, 7, 300, 64, -1),  # "GREETIN": unset
        (-16, 8, 300, 64, -2),  # the key runs past the end of memory
        (100, 8, 65530, 64, -2),  # it fits the buffer's capacity, but the buffer runs past the end of memory
        (100, 0, 300, 64, -1),  # the empty key: unset
    ],
)
def test_env_get_answers_as_the_abi_says(runtime, deploy, key_ptr, key_len, buf_ptr, buf_cap, answer):
    handle = ENV_CODE_HANDLE.format(key_ptr=key_ptr, key_len=key_len, buf_ptr=buf_ptr, buf_cap=buf_cap)
    fn = deploy(wat_guest(handle, extra=ENV_CODE_DATA, imports=ENV_IMPORT), env={"GREETING": "hola, mundo", "OTHER": "x"})
    result = runtime.invoker.invoke_sync(fn, make_event()).result
    assert isinstance(result, EdgeResponse) and result.status == 210 + answer


def test_a_warm_instance_reads_the_env_of_its_own_function(runtime, deploy):
    wasm = env_guest("GREETING")
    first, second = (deploy(wasm, name=name, env={"GREETING": name}) for name in ("first", "second"))
    for fn in (first, second, first):
        warm = FunctionSpec(fn.name, fn.digest, fn.limits, fn.env, reuse_instances=True)
        for _ in range(2):
            assert runtime.invoker.invoke_sync(warm, make_event()).result.body.data == fn.name.encode()


def test_guest_log_lines_reach_the_function_log_with_level_and_request_id(runtime, deploy, caplog):
    extra = r'(data (i32.const 16) "\a1\66status\18\c8") (data (i32.const 64) "careful now")'
    handle = """
      (call $log (i32.const 2) (i32.const 64) (i32.const 11))
      (call $log (i32.const 0) (i32.const 64) (i32.const 7))
      (call $log (i32.const 1) (i32.const 0x7FFFFFF0) (i32.const 100))
      (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"""
    fn = deploy(wat_guest(handle, extra=extra, imports=LOG_IMPORT), name="talker")
    with caplog.at_level(logging.DEBUG, logger="edgefn.function.talker"):
        runtime.invoker.invoke_sync(fn, make_event(request_id="r-log"))
    guest = [(level, line) for level, line in log_lines(caplog) if "\t" in line and not line.startswith("REPORT")]
    assert (logging.WARNING, "r-log\tcareful now") in guest
    assert (logging.DEBUG, "r-log\tcareful") in guest
    assert any(level == logging.WARNING and "outside guest memory" in msg for level, msg in guest)


WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
"""
WASI_DATA = r"""
  (data (i32.const 16) "\a1\66status\18\c8")
  (data (i32.const 200) "\2c\01\00\00\17\00\00\00")  ;; iovec {ptr=300, len=23}
  (data (i32.const 208) "\54\01\00\00\08\00\00\00")  ;; iovec {ptr=340, len=8}
  (data (i32.const 300) "hello from wasi\npartial")
  (data (i32.const 340) "oops!\nok")
"""
WASI_HANDLE = """
  (block $fail
    (i32.store8 (i32.const 25) (i32.const 211))
    (br_if $fail (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 400)))
    (br_if $fail (call $fd_write (i32.const 2) (i32.const 208) (i32.const 1) (i32.const 400)))
    (i32.store8 (i32.const 25) (i32.const 212))
    (br_if $fail (call $random_get (i32.const 500) (i32.const 16)))
    (br_if $fail (i64.eqz (i64.or (i64.load (i32.const 500)) (i64.load (i32.const 508)))))
    (i32.store8 (i32.const 25) (i32.const 213))
    (br_if $fail (call $env_sizes (i32.const 600) (i32.const 604)))
    (br_if $fail (i32.ne (i32.load (i32.const 600)) (i32.const 2)))
    (i32.store8 (i32.const 25) (i32.const 214))
    (br_if $fail (call $clock (i32.const 0) (i64.const 1) (i32.const 608)))
    (br_if $fail (i64.lt_u (i64.load (i32.const 608)) (i64.const 1600000000000000000)))
    (i32.store8 (i32.const 25) (i32.const 215))
    (br_if $fail (call $prestat (i32.const 3) (i32.const 700)))  ;; the one preopened directory: /tmp
    (br_if $fail (i32.ne (i32.load (i32.const 704)) (i32.const 4)))  ;; its name is 4 bytes long
    (br_if $fail (i32.eqz (call $prestat (i32.const 4) (i32.const 700))))  ;; and there is no other
    (i32.store8 (i32.const 25) (i32.const 200)))
  (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))"""


def test_wasi_is_offered_with_least_privilege(runtime, deploy, caplog):
    wasm = wat_guest(WASI_HANDLE, extra=WASI_DATA, imports=WASI_IMPORTS)
    fn = deploy(wasm, name="wasi-guest", env={"A": "1", "B": "2"})
    assert runtime.store.load(fn.digest, fn.name)[0].info.imports_wasi
    with caplog.at_level(logging.INFO, logger="edgefn.function.wasi-guest"):
        result = runtime.invoker.invoke_sync(fn, make_event(request_id="r-wasi")).result
    # 211 stdout failed, 212 random, 213 environ (exactly the manifest env), 214 clock, 215 a preopen besides /tmp existed (or /tmp was missing)
    assert result.status == 200
    lines = log_lines(caplog)
    assert (logging.INFO, "r-wasi\thello from wasi") in lines
    assert (logging.INFO, "r-wasi\tpartial") in lines  # the unterminated line is flushed at the end
    assert (logging.WARNING, "r-wasi\toops!") in lines  # stderr
    assert (logging.WARNING, "r-wasi\tok") in lines

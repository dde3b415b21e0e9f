"""Settings: explicit argument > LONGRUN_* environment variable > default, and clear errors."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from longrun import FileStore, LongrunConfigError, MemoryStore, S3Store, longrun
from longrun.config import (
    DEFAULT_CHECKPOINT_EVERY_S,
    DEFAULT_MAX_HOPS,
    DEFAULT_MAX_RUN_SECONDS,
    DEFAULT_MIN_MARGIN_MS,
    Settings,
    resolve,
    store_from_uri,
)

STORE = MemoryStore()

# (argument, variable, explicit value, env text, value from env, default)
SETTINGS: list[tuple[str, str, Any, str, Any, Any]] = [
    ("max_hops", "LONGRUN_MAX_HOPS", 3, "7", 7, DEFAULT_MAX_HOPS),
    ("margin_ms", "LONGRUN_MARGIN_MS", 1500, "2500", 2500, None),
    ("min_margin_ms", "LONGRUN_MIN_MARGIN_MS", 100, "300", 300, DEFAULT_MIN_MARGIN_MS),
    (
        "checkpoint_every_s",
        "LONGRUN_CHECKPOINT_EVERY_S",
        5.0,
        "12.5",
        12.5,
        DEFAULT_CHECKPOINT_EVERY_S,
    ),
    ("max_run_seconds", "LONGRUN_MAX_RUN_SECONDS", 100.0, "3600", 3600.0, DEFAULT_MAX_RUN_SECONDS),
    ("disabled", "LONGRUN_DISABLED", True, "1", True, False),
]
IDS = [s[0] for s in SETTINGS]
COLUMNS = ("arg", "var", "explicit", "text", "from_env", "default")


def settle(explicit: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Resolve with a store given (unless the test gives its own) and only ``env``."""
    args: dict[str, Any] = {"checkpoint": STORE}
    args.update(explicit or {})
    return resolve(args, env=env or {})


def unique_bucket() -> str:
    return f"cfg-{uuid.uuid4().hex[:12]}"


# -- precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize(COLUMNS, SETTINGS, ids=IDS)
def test_default_when_neither_argument_nor_env(
    arg: str, var: str, explicit: Any, text: str, from_env: Any, default: Any
) -> None:
    assert getattr(settle(), arg) == default
    assert getattr(settle({arg: None}), arg) == default  # None means "not given"


@pytest.mark.parametrize(COLUMNS, SETTINGS, ids=IDS)
def test_env_beats_default(
    arg: str, var: str, explicit: Any, text: str, from_env: Any, default: Any
) -> None:
    value = getattr(settle(env={var: text}), arg)
    assert value == from_env
    assert value != default
    assert type(value) is type(from_env)


@pytest.mark.parametrize(COLUMNS, SETTINGS, ids=IDS)
def test_argument_beats_env(
    arg: str, var: str, explicit: Any, text: str, from_env: Any, default: Any
) -> None:
    assert explicit != from_env or arg == "disabled"
    assert getattr(settle({arg: explicit}, env={var: text}), arg) == explicit
    # A malformed variable is not even looked at when the argument is given.
    assert getattr(settle({arg: explicit}, env={var: "garbage"}), arg) == explicit


@pytest.mark.parametrize(COLUMNS, SETTINGS, ids=IDS)
def test_os_environ_is_read_by_default(
    monkeypatch: pytest.MonkeyPatch,
    arg: str,
    var: str,
    explicit: Any,
    text: str,
    from_env: Any,
    default: Any,
) -> None:
    monkeypatch.setenv(var, text)
    assert getattr(resolve({"checkpoint": STORE}), arg) == from_env
    assert getattr(resolve({"checkpoint": STORE, arg: explicit}), arg) == explicit


@pytest.mark.parametrize(
    ("arg", "var", "explicit", "text"),
    [
        ("max_hops", "LONGRUN_MAX_HOPS", 0, "7"),
        ("margin_ms", "LONGRUN_MARGIN_MS", 0, "2500"),
        ("min_margin_ms", "LONGRUN_MIN_MARGIN_MS", 0, "300"),
        ("disabled", "LONGRUN_DISABLED", False, "true"),
    ],
)
def test_falsy_arguments_still_beat_env(arg: str, var: str, explicit: Any, text: str) -> None:
    value = getattr(settle({arg: explicit}, env={var: text}), arg)
    assert value == explicit
    assert type(value) is type(explicit)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_disabled_spellings(text: str, expected: bool) -> None:
    assert settle(env={"LONGRUN_DISABLED": text}).disabled is expected


@pytest.mark.parametrize("text", ["none", "None", "off"])
def test_max_run_seconds_can_be_switched_off(text: str) -> None:
    assert settle(env={"LONGRUN_MAX_RUN_SECONDS": text}).max_run_seconds is None


def test_checkpoint_argument_beats_env_uri(tmp_path: Path) -> None:
    env = {"LONGRUN_CHECKPOINT_URI": f"file://{tmp_path}/from-env"}
    mine = MemoryStore()
    assert resolve({"checkpoint": mine}, env=env).store is mine
    from_env = resolve({}, env=env).store
    assert isinstance(from_env, FileStore)
    assert from_env.root == tmp_path / "from-env"
    # An argument given as a URI string is used the same way.
    given = resolve({"checkpoint": f"file://{tmp_path}/from-arg"}, env=env).store
    assert isinstance(given, FileStore)
    assert given.root == tmp_path / "from-arg"


def test_checkpoint_uri_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = unique_bucket()
    monkeypatch.setenv("LONGRUN_CHECKPOINT_URI", f"s3://{bucket}/jobs/")
    store = resolve({}).store
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == (bucket, "jobs/")


# -- malformed values ------------------------------------------------------------------------

MALFORMED = [
    ("LONGRUN_MAX_HOPS", "ten"),
    ("LONGRUN_MAX_HOPS", "-1"),
    ("LONGRUN_MAX_HOPS", "nan"),
    ("LONGRUN_MAX_HOPS", "2.5"),
    ("LONGRUN_MAX_HOPS", ""),
    ("LONGRUN_MARGIN_MS", "ten"),
    ("LONGRUN_MARGIN_MS", "-1"),
    ("LONGRUN_MARGIN_MS", "nan"),
    ("LONGRUN_MIN_MARGIN_MS", "ten"),
    ("LONGRUN_MIN_MARGIN_MS", "-1"),
    ("LONGRUN_MIN_MARGIN_MS", "nan"),
    ("LONGRUN_CHECKPOINT_EVERY_S", "ten"),
    ("LONGRUN_CHECKPOINT_EVERY_S", "-1"),
    ("LONGRUN_CHECKPOINT_EVERY_S", "nan"),
    ("LONGRUN_CHECKPOINT_EVERY_S", "inf"),
    ("LONGRUN_CHECKPOINT_EVERY_S", "0"),
    ("LONGRUN_CHECKPOINT_EVERY_S", "none"),
    ("LONGRUN_MAX_RUN_SECONDS", "ten"),
    ("LONGRUN_MAX_RUN_SECONDS", "-1"),
    ("LONGRUN_MAX_RUN_SECONDS", "nan"),
    ("LONGRUN_DISABLED", "maybe"),
    ("LONGRUN_DISABLED", "2"),
    ("LONGRUN_CHECKPOINT_URI", "ftp://x"),
    ("LONGRUN_CHECKPOINT_URI", "/mnt/efs/no-scheme"),
    ("LONGRUN_CHECKPOINT_URI", "s3:///prefix-but-no-bucket/"),
    ("LONGRUN_CHECKPOINT_URI", "file://some-host/mnt/x"),
    ("LONGRUN_CHECKPOINT_URI", "file:relative/dir"),
    ("LONGRUN_CHECKPOINT_URI", "file:"),
]


@pytest.mark.parametrize(("var", "bad"), MALFORMED, ids=[f"{v}={b}" for v, b in MALFORMED])
def test_malformed_env_value_names_variable_and_value(var: str, bad: str) -> None:
    # No explicit store when the store itself is under test; else one, so only ``var`` is wrong.
    explicit: dict[str, Any] = {} if var == "LONGRUN_CHECKPOINT_URI" else {"checkpoint": STORE}
    with pytest.raises(LongrunConfigError) as info:
        resolve(explicit, env={var: bad})
    message = str(info.value)
    assert var in message
    assert repr(bad) in message


@pytest.mark.parametrize(
    ("arg", "bad"),
    [
        ("max_hops", "ten"),
        ("max_hops", -1),
        ("max_hops", True),
        ("max_hops", 2.5),
        ("margin_ms", -5),
        ("checkpoint_every_s", 0),
        ("checkpoint_every_s", float("nan")),
        ("max_run_seconds", "forever"),
        ("disabled", "maybe"),
        ("checkpoint", 42),
        ("checkpoint", "ftp://x"),
    ],
)
def test_malformed_argument_names_the_argument(arg: str, bad: Any) -> None:
    explicit: dict[str, Any] = {"checkpoint": STORE, arg: bad}
    with pytest.raises(LongrunConfigError) as info:
        resolve(explicit, env={})
    message = str(info.value)
    assert f"{arg}=" in message
    assert repr(bad) in message


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="LONGRUN_MAX_HOPS"):
        settle(env={"LONGRUN_MAX_HOPS": "ten"})


# -- stores from URIs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix"),
    [("/prefix/", "prefix/"), ("/a/b/", "a/b/"), ("", ""), ("/", "")],
)
def test_s3_uri_builds_an_s3_store(path: str, prefix: str) -> None:
    bucket = unique_bucket()
    store = resolve({}, env={"LONGRUN_CHECKPOINT_URI": f"s3://{bucket}{path}"}).store
    assert isinstance(store, S3Store)
    assert store.bucket == bucket
    assert store.prefix == prefix
    assert store._client is None  # no client (and no boto3) until the first read or write
    assert store.describe(store.key("r")) == f"s3://{bucket}/{prefix}r/checkpoint.json"


def test_file_uri_builds_a_file_store(tmp_path: Path) -> None:
    store = resolve({}, env={"LONGRUN_CHECKPOINT_URI": f"file://{tmp_path}/x"}).store
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "x"
    assert not (tmp_path / "x").exists()  # created on first write, not at configuration


def test_file_uri_forms(tmp_path: Path) -> None:
    with_space = store_from_uri(f"file://{tmp_path}/with%20space")
    assert isinstance(with_space, FileStore)
    assert with_space.root == tmp_path / "with space"
    local = store_from_uri(f"file://localhost{tmp_path}/local")
    assert isinstance(local, FileStore)
    assert local.root == tmp_path / "local"


def test_file_uri_to_a_regular_file_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "plain-file"
    target.write_text("")
    with pytest.raises(LongrunConfigError, match="not a directory"):
        resolve({}, env={"LONGRUN_CHECKPOINT_URI": f"file://{target}"})


def test_same_uri_gives_the_same_cached_store(tmp_path: Path) -> None:
    s3_uri = f"s3://{unique_bucket()}/prefix/"
    first = resolve({}, env={"LONGRUN_CHECKPOINT_URI": s3_uri}).store
    again = resolve({}, env={"LONGRUN_CHECKPOINT_URI": s3_uri}).store
    assert first is again
    assert store_from_uri(s3_uri) is first
    assert resolve({"checkpoint": s3_uri}, env={}).store is first

    other = store_from_uri(f"s3://{unique_bucket()}/prefix/")
    assert other is not first

    file_uri = f"file://{tmp_path}/cached"
    assert store_from_uri(file_uri) is store_from_uri(file_uri)
    assert store_from_uri(file_uri) is not store_from_uri(f"file://{tmp_path}/other")


def test_a_failed_uri_is_not_cached(tmp_path: Path) -> None:
    target = tmp_path / "later-a-dir"
    target.write_text("")
    uri = f"file://{target}"
    with pytest.raises(LongrunConfigError):
        store_from_uri(uri)
    target.unlink()
    target.mkdir()
    store = store_from_uri(uri)
    assert isinstance(store, FileStore)
    assert store.root == target


# -- no store ----------------------------------------------------------------------------------


def test_no_store_at_all_says_what_to_do() -> None:
    with pytest.raises(LongrunConfigError) as info:
        resolve({}, env={})
    message = str(info.value)
    assert "no checkpoint store" in message
    assert "checkpoint=S3Store(" in message
    assert "LONGRUN_CHECKPOINT_URI=s3://" in message
    assert "file://" in message


def test_no_store_is_fine_when_disabled() -> None:
    settings = resolve({}, env={"LONGRUN_DISABLED": "1"})
    assert settings.disabled is True
    assert settings.store is None
    assert resolve({"disabled": True}, env={}).store is None


# -- the decorator validates at decoration time -------------------------------------------


def test_bad_env_fails_at_decoration_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGRUN_MAX_HOPS", "abc")
    with pytest.raises(LongrunConfigError) as info:

        @longrun(checkpoint=MemoryStore())
        def handler(event: Any, context: Any) -> Any:  # pragma: no cover - never decorated
            return event

    assert "LONGRUN_MAX_HOPS" in str(info.value)
    assert "'abc'" in str(info.value)


def test_bad_argument_fails_at_decoration_time() -> None:
    with pytest.raises(LongrunConfigError, match="max_run_seconds"):

        @longrun(checkpoint=MemoryStore(), max_run_seconds=-1)
        def handler(event: Any, context: Any) -> Any:  # pragma: no cover - never decorated
            return event


def test_missing_store_fails_at_decoration_time() -> None:
    with pytest.raises(LongrunConfigError, match="no checkpoint store"):

        @longrun
        def handler(event: Any, context: Any) -> Any:  # pragma: no cover - never decorated
            return event


def test_good_settings_decorate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGRUN_MAX_HOPS", "4")

    @longrun(checkpoint=MemoryStore())
    def handler(event: Any, context: Any) -> Any:
        return event

    assert callable(handler)
    assert handler.__name__ == "handler"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("", ""), ("longrun", "longrun/"), ("longrun/", "longrun/"), ("/a/b", "a/b/")],
)
def test_s3_prefix_is_a_folder(prefix: str, expected: str) -> None:
    from longrun import S3Store

    assert S3Store("some-bucket", prefix=prefix).prefix == expected
    uri_store = store_from_uri(f"s3://some-bucket/{prefix.lstrip('/')}")
    assert isinstance(uri_store, S3Store) and uri_store.prefix == expected


def test_the_emulators_store_wins_over_the_decorators_own(tmp_path: Path) -> None:
    from longrun.config import resolve

    explicit = {"checkpoint": S3Store("my-bucket", prefix="longrun/")}
    env = {"LONGRUN_LOCAL_CHECKPOINT_URI": f"file://{tmp_path}"}
    store = resolve(explicit, env=env).store
    assert isinstance(store, FileStore) and store.root == tmp_path
    assert isinstance(resolve(explicit, env={}).store, S3Store)
    # A test override (the simulator's store) still comes first.
    memory = MemoryStore()
    assert resolve(explicit, {"checkpoint": memory}, env=env).store is memory

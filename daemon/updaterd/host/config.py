"""The TOML configuration as msgspec Structs, validated with errors that name file and key.

Validation walks the raw TOML table field by field against the Struct definitions, so that one
run reports every problem (one line each) instead of stopping at the first.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import re
import tomllib
from collections.abc import Iterable
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from updaterd.errors import ConfigError
from updaterd.trust.urlpolicy import HTTP_RULE, http_allowed
from updaterd.units import DURATION_PATTERN, RATE_PATTERN, SIZE_PATTERN, parse_duration, parse_size

if TYPE_CHECKING:
    from updaterd.trust import archive

DEFAULT_CONFIG = "/etc/updaterd/updaterd.toml"

Duration = Annotated[str, Meta(pattern=DURATION_PATTERN)]
WatchInterval = Annotated[str, Meta(pattern=r"^\s*0\s*$|" + DURATION_PATTERN)]
MIN_WATCH_INTERVAL = 1.0  # seconds: a look more often is a mistake (a fleet's requests)
Size = Annotated[str, Meta(pattern=SIZE_PATTERN)]
Rate = Annotated[str, Meta(pattern=RATE_PATTERN)]
AppName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Mode = Annotated[str, Meta(pattern=r"^0?[0-7]{3}$")]


class Limits(Struct, forbid_unknown_fields=True, kw_only=True):
    """Every bound updaterd enforces, in one place; `[limits]` in the file overrides them."""

    max_manifest_size: Size = "4MiB"
    max_archive_members: Annotated[int, Meta(ge=1)] = 200_000
    max_extracted_size: Size = "8GiB"
    max_file_size: Size = "4GiB"
    connect_timeout: Duration = "15s"
    read_timeout: Duration = "60s"
    min_speed: Size = "1KiB"  # per second, averaged over min_speed_window
    min_speed_window: Duration = "60s"
    retries: Annotated[int, Meta(ge=0, le=100)] = 5
    backoff_base: Duration = "1s"
    backoff_cap: Duration = "60s"
    retry_after_cap: Duration = "15m"
    max_redirects: Annotated[int, Meta(ge=0, le=20)] = 5
    download_deadline: Duration = "6h"
    history_length: Annotated[int, Meta(ge=1)] = 200
    max_clients: Annotated[int, Meta(ge=1)] = 256  # unprivileged connections in total
    max_clients_per_uid: Annotated[int, Meta(ge=1)] = 32
    client_idle_timeout: Duration = "60s"  # no request for this long: dropped
    client_line_timeout: Duration = "10s"  # a started line must end within this
    client_send_timeout: Duration = "10s"  # a reply or event not taken within this: dropped
    # subscribe and inhibit hold memory for as long as a connection stays open (G136)
    max_subscriptions_per_client: Annotated[int, Meta(ge=1)] = 16
    max_subscriptions: Annotated[int, Meta(ge=1)] = 1024
    max_inhibitors_per_client: Annotated[int, Meta(ge=1)] = 16
    max_inhibitors: Annotated[int, Meta(ge=1)] = 256

    def extraction(self) -> archive.ExtractLimits:
        """The bounds an archive (or a delta) is built within."""
        from updaterd.trust import archive  # tarfile and zstandard: loaded with the first archive

        return archive.ExtractLimits(max_members=self.max_archive_members,
                                     max_total=parse_size(self.max_extracted_size),
                                     max_file=parse_size(self.max_file_size))


class DaemonConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[daemon]` table."""

    socket: str = "/run/updaterd/updaterd.sock"
    socket_mode: Mode = "0660"
    admin_group: str = "updaterd"
    # set: rollback and downgrades need root or this group as well (stricter than admin_group)
    downgrade_group: str | None = None
    state_dir: str = "/var/lib/updaterd"
    cache_dir: str = "/var/cache/updaterd"
    lock_file: str = "/run/updaterd/updaterd.lock"
    max_parallel_downloads: Annotated[int, Meta(ge=1, le=64)] = 2
    host_id: str | None = None  # for rollout; default /etc/machine-id
    platform: str | None = None  # default linux-<machine>
    max_rate: Rate | None = None  # a cap on all downloads together
    # serve the metrics on plain HTTP GET /metrics here (HOST:PORT), for a Prometheus to scrape
    metrics_listen: str | None = None


class AppConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[apps.NAME]` table."""

    source: Literal["manifest", "github", "directory"]
    # manifest
    url: str | None = None
    # further origins of the same feed (mirrors, CDNs), tried in order after `url`
    mirrors: list[str] = []
    # directory
    path: str | None = None
    public_keys: list[str] = []
    threshold: Annotated[int, Meta(ge=1, le=16)] = 1  # signatures by distinct keys needed
    channel: str = "stable"
    # github
    repo: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] | None = None
    api_url: str = "https://api.github.com"
    token_env: str | None = None
    token_file: str | None = None
    asset: str | None = None
    checksums: str | None = None
    signature: str | None = None
    prerelease: bool = False
    # every source
    install: Literal["releases", "inplace"] = "releases"
    prefix: str | None = None
    target: str | None = None
    executable: str | None = None
    check_interval: Duration = "4h"
    jitter: Duration = "10m"
    # signed feeds: between checks, a conditional look for recalls, yanks and halts ("0": off)
    watch_interval: WatchInterval = "2m"
    auto_update: bool = True
    retain: Annotated[int, Meta(ge=0, le=100)] = 3
    pin: str | None = None
    health_check: list[str] = []
    health_timeout: Duration = "30s"
    restart: list[str] = []
    # variables of the daemon's environment that restart and health_check also get (G132)
    pass_environment: list[Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []
    max_inhibit: Duration = "1h"
    verify: Literal["required", "skip"] = "required"
    health_url: str | None = None
    health_notify: bool = False
    unit: str | None = None  # the systemd unit of the app, for health_notify
    window: str | None = None
    max_rate: Rate | None = None
    # where the size is not signed (github): no artifact larger than this is fetched (H149)
    max_artifact_size: Size = "4GiB"
    proxy: str | None = None
    # hosts that feeds and artifacts may come from, redirects included (G138); default:
    # manifest, the feed's host and the hosts its signed manifest names; github, any
    allowed_hosts: list[str] | None = None
    allow_insecure: bool = False
    # a PEM bundle trusted for this app's TLS in place of the system's store
    ca_file: str | None = None
    # paths the app writes at run time, kept in PREFIX/shared/ and linked into each release
    shared: list[str] = []
    # a snapshot of shared/ before each update's switch, for `rollback --with-data`
    data_snapshots: bool = False
    # `self = true`: this app is updaterd's own installation (see updaterd.selfupdate)
    self_update: bool = msgspec.field(default=False, name="self")


def shared_problems(app: AppConfig) -> list[str]:
    """What is wrong with an app's `shared` paths: each is relative, below the release, named
    once, and none is inside another (H159). A release-folder app's key only."""
    if not app.shared:
        return []
    if app.install != "releases" or app.self_update:
        return ["only an app installed as release folders keeps shared paths (an in-place "
                "executable has no folder of its own to keep data in)"]
    problems = []
    for path in app.shared:
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or \
                any(ord(c) < 32 or c == "\x7f" for c in path) or len(path) > 1024:
            problems.append(f"{path!r} must be a relative path below the release, without "
                            "'.', '..' or empty parts (e.g. \"data\" or \"etc/app.conf\")")
    if len(set(app.shared)) != len(app.shared):
        problems.append("a path is named twice")
    for a in app.shared:
        for b in app.shared:
            if a != b and b.startswith(a + "/"):
                problems.append(f"{b!r} is inside {a!r}, which is shared already")
    return problems


MAX_MIRRORS = 16


def mirror_problems(app: AppConfig) -> list[str]:
    """What is wrong with an app's `mirrors`: further http(s) origins of a `manifest` feed on
    the network, each a manifest's URL under the same rule as `url`, each named once."""
    if not app.mirrors:
        return []
    if app.source != "manifest" or urlsplit(app.url or "").scheme not in ("http", "https"):
        return ["only a feed fetched over the network (source = \"manifest\" with an "
                "https:// url) has mirrors"]
    problems = []
    for mirror in app.mirrors:
        parts = urlsplit(mirror)
        if parts.scheme == "http" and not http_allowed(parts.hostname or "", app.allow_insecure):
            problems.append(f"{mirror!r}: {HTTP_RULE}")
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"{mirror!r} is not an https:// URL of a manifest")
    if len({app.url, *app.mirrors}) != 1 + len(app.mirrors):
        problems.append("an origin is named twice (url and mirrors together)")
    if len(app.mirrors) > MAX_MIRRORS:
        problems.append(f"{len(app.mirrors)} mirrors; at most {MAX_MIRRORS}")
    return problems


def origins(app: AppConfig) -> list[str]:
    """Where a manifest feed is asked, in order: `url`, then each of `mirrors`."""
    return [app.url, *app.mirrors] if app.url is not None else []


class Config(Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole file."""

    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    limits: Limits = msgspec.field(default_factory=Limits)
    apps: dict[AppName, AppConfig] = {}
    path: str = ""  # where it was read from; set by load(), not a key in the file


S = TypeVar("S", bound=Struct)


def watch_seconds(app: AppConfig) -> float | None:
    """How often the app's feed is looked at between checks; None: never (`"0"`, or GitHub
    Releases, which have no signed feed whose recalls and yanks a look could find)."""
    if app.source == "github" or app.watch_interval.strip() == "0":
        return None
    return parse_duration(app.watch_interval)


def host_platform() -> str:
    """`linux-x86_64`-style name of this host: what `platform` defaults to."""
    return f"{platform.system().lower()}-{platform.machine()}"


def _describe(err: msgspec.ValidationError) -> str:
    text = str(err)
    return re.sub(r"\s*- at `\$[^`]*`$", "", text)


_EXAMPLES = {"duration": "30s, 10m, 4h, 1h30m, 7d", "size": "512KiB, 4MiB, 1GB",
             "rate": "512KiB/s, 20MiB/s", "mode": "0660, 0600"}


def _friendly(value: Any, hint: Any) -> str | None:
    """What a person needs to read instead of msgspec's regex, for the few pattern types."""
    options = [a for a in get_args(hint) if a is not type(None)] \
        if get_origin(hint) in (Union, UnionType) else [hint]
    for option in options:
        for name, kind in (("duration", Duration), ("size", Size), ("rate", Rate),
                           ("mode", Mode)):
            if option == kind and isinstance(value, str):
                return f"{value!r} is not a {name} (examples: {_EXAMPLES[name]})"
        if get_origin(option) is Literal:
            allowed = ", ".join(f'"{a}"' for a in get_args(option))
            return f"{value!r} is not one of {allowed}"
    plain = {int: "a whole number", bool: "true or false", str: "a string (in quotes)",
             list: "a list ([...])"}
    base = get_origin(options[0]) or options[0] if len(options) == 1 else None
    if base is Annotated:
        base, *metas = get_args(options[0])
        bounds = [m for m in metas if isinstance(m, Meta)]
        if base is int and isinstance(value, int) and not isinstance(value, bool) and bounds:
            low, high = bounds[0].ge, bounds[0].le
            if low is not None and value < low:
                return f"{value} is too small (at least {low})"
            if high is not None and value > high:
                return f"{value} is too large (at most {high})"
    if base in plain and not (base is int and isinstance(value, int)
                              and not isinstance(value, bool)):
        return f"{value!r} is not {plain[base]}"
    return None


def _unknown(key: str, known: Iterable[str]) -> str:
    import difflib  # only when a key is wrong

    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _validate_table(raw: Any, cls: type[S], where: str, problems: list[str]) -> S | None:
    """Validate `raw` against `cls` key by key, appending one problem per bad key.

    Bad keys fall back to their defaults so that the cross-key rules can still run on the
    rest; None only when a required key is missing or the table is not a table.
    """
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {type(raw).__name__}")
        return None
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    good = {}
    for key, value in raw.items():
        if key not in fields or (key == "path" and cls is Config):
            problems.append(f"{where}.{key}: {_unknown(key, fields)}")
            continue
        hint = hints[fields[key].name]
        try:
            msgspec.convert(value, hint, strict=True)
        except msgspec.ValidationError as e:
            problems.append(f"{where}.{key}: {_friendly(value, hint) or _describe(e)}")
            continue
        good[key] = value
    missing = [name for name, f in fields.items() if f.required and name not in raw]
    for name in missing:
        problems.append(f"{where}.{name}: required key is missing")
    if missing or any(f.required and name not in good for name, f in fields.items()):
        return None
    return msgspec.convert(good, cls, strict=True)


def _validate_app(name: str, app: AppConfig, where: str, problems: list[str],
               token_vars: frozenset[str] = frozenset()) -> None:
    """The rules that span several keys or need more than a type."""

    def bad(key: str, why: str) -> None:
        problems.append(f"{where}.{key}: {why}")

    for key in ("check_interval", "jitter", "health_timeout", "max_inhibit"):
        try:
            parse_duration(getattr(app, key))
        except ValueError as e:
            bad(key, str(e))
    if app.watch_interval.strip() != "0" and \
            parse_duration(app.watch_interval) < MIN_WATCH_INTERVAL:
        bad("watch_interval", f"{app.watch_interval!r} is under {MIN_WATCH_INTERVAL:g}s; "
            "each look is a request from every host (\"0\": off)")
    for key in ("asset", "checksums"):
        pattern = getattr(app, key)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as e:
                bad(key, f"bad regular expression {pattern!r}: {e}")
    if app.pin is not None:
        from updaterd.versions import parse_pin

        try:
            parse_pin(app.pin)
        except ValueError as e:
            bad("pin", str(e))
    if app.source == "manifest":
        if not app.url:
            bad("url", "required when source = \"manifest\"")
        else:
            parts = urlsplit(app.url)
            if parts.scheme == "http":
                if not http_allowed(parts.hostname or "", app.allow_insecure):
                    bad("url", HTTP_RULE)
            elif parts.scheme not in ("https", "file"):
                bad("url", f"scheme {parts.scheme!r} is not supported (https:// or file://)")
            if parts.scheme in ("http", "https") and not app.public_keys and app.verify != "skip":
                bad("public_keys", "a feed fetched over the network needs public_keys "
                    "(or verify = \"skip\", which is unsafe)")
    for problem in mirror_problems(app):
        bad("mirrors", problem)
    if app.source == "directory" and not app.path:
        bad("path", "required when source = \"directory\"")
    if app.source == "github":
        if not app.repo:
            bad("repo", "required when source = \"github\"")
        if not app.asset:
            bad("asset", "required when source = \"github\" (a regular expression)")
        if app.token_env and app.token_file:
            bad("token_file", "set token_env or token_file, not both")
        if app.signature is not None and "{asset}" not in app.signature:
            bad("signature", "must contain {asset}, e.g. \"{asset}.minisig\"")
        parts = urlsplit(app.api_url)
        if parts.scheme == "http":
            if not http_allowed(parts.hostname or "", app.allow_insecure):
                bad("api_url", HTTP_RULE)
        elif parts.scheme != "https":
            bad("api_url", f"scheme {parts.scheme!r} is not supported (https://)")
    if app.install == "releases" and not app.prefix:
        bad("prefix", "required when install = \"releases\"")
    if app.install == "inplace" and not app.target:
        bad("target", "required when install = \"inplace\"")
    for problem in shared_problems(app):
        bad("shared", problem)
    if app.data_snapshots and not app.shared:
        bad("data_snapshots", "keeps snapshots of the app's shared paths; set `shared` too")
    if app.self_update and app.install != "releases":
        bad("self", "updaterd updates itself with install = \"releases\" (a prefix made by "
            "`updaterd self-install`)")
    for key in ("prefix", "target", "path"):
        value = getattr(app, key)
        if value is not None and not value.startswith("/"):
            bad(key, f"must be an absolute path, got {value!r}")
    if app.executable is not None and ("/" in app.executable or app.executable in ("", ".", "..")):
        bad("executable", f"must be a plain file name, got {app.executable!r}")
    for var in app.pass_environment:
        if var in token_vars:
            bad("pass_environment", f"{var} is a token_env; tokens are never passed to "
                "commands")
    if app.health_check and not app.health_check[0]:
        bad("health_check", "the command is empty")
    if app.window is not None:
        from updaterd.window import parse as parse_window

        try:
            parse_window(app.window)
        except ValueError as e:
            bad("window", str(e))
    if app.health_url is not None and urlsplit(app.health_url).scheme not in ("http", "https"):
        bad("health_url", "must be an http:// or https:// URL")
    if app.proxy is not None and urlsplit(app.proxy).scheme not in ("http", "https", "socks5"):
        bad("proxy", "must be an http://, https:// or socks5:// URL")
    if app.ca_file is not None:
        from updaterd.trust.tlstrust import check_ca_file

        if why := check_ca_file(app.ca_file):
            bad("ca_file", why)
    if app.health_notify and app.unit is None and not _restart_unit(app.restart):
        bad("health_notify", "needs unit = \"NAME.service\" (or restart = [\"systemctl\", "
            "\"restart\", \"NAME.service\"])")
    from updaterd.trust.minisign import PublicKey

    distinct = set()
    for i, key in enumerate(app.public_keys):
        try:
            distinct.add(PublicKey.parse(key).raw)
        except ValueError as e:
            bad(f"public_keys[{i}]", str(e))
    if app.public_keys and app.threshold > len(distinct):
        bad("threshold", f"{app.threshold} signatures needed but public_keys holds "
            f"{len(distinct)} distinct keys")


def _restart_unit(restart: list[str]) -> str | None:
    """The unit of a `systemctl restart UNIT` command."""
    if len(restart) == 3 and restart[0].rsplit("/", 1)[-1] == "systemctl" and \
            restart[1] == "restart":
        return restart[2]
    return None


def app_unit(app: AppConfig) -> str | None:
    """The systemd unit that health_notify asks about."""
    return app.unit or _restart_unit(app.restart)


MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its NUL


def parse(text: str, path: str) -> Config:
    """Decode and validate configuration text; raises ConfigError with one line per problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    problems: list[str] = []
    for key in raw:
        if key not in ("daemon", "limits", "apps"):
            problems.append(f"{path}: {key}: {_unknown(key, ('daemon', 'limits', 'apps'))}")
    daemon = _validate_table(raw.get("daemon", {}), DaemonConfig, f"{path}: daemon", problems)
    limits = _validate_table(raw.get("limits", {}), Limits, f"{path}: limits", problems)
    if limits is not None:
        for f in msgspec.structs.fields(Limits):
            value = getattr(limits, f.name)
            if isinstance(value, str):
                try:
                    (parse_duration if f.type == Duration else parse_size)(value)
                except ValueError as e:
                    problems.append(f"{path}: limits.{f.name}: {e}")
    apps: dict[str, AppConfig] = {}
    raw_apps = raw.get("apps", {})
    if not isinstance(raw_apps, dict):
        problems.append(f"{path}: apps: expected a table of apps")
        raw_apps = {}
    token_vars = frozenset(str(t["token_env"]) for t in raw_apps.values()
                           if isinstance(t, dict) and isinstance(t.get("token_env"), str))
    for name, table in raw_apps.items():
        at = f"{path}: apps.{name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            problems.append(f"{at}: bad app name (letters, digits, '.', '_', '-'; at most 64)")
            continue
        app = _validate_table(table, AppConfig, at, problems)
        if app is not None:
            _validate_app(name, app, at, problems, token_vars)
            apps[name] = app
    if daemon is not None:
        problems += _overlaps(daemon, apps, path)
        if daemon.metrics_listen is not None:
            problems += _listen_problems(daemon.metrics_listen, path)
        if len(daemon.socket.encode()) > MAX_SOCKET_PATH:
            problems.append(f"{path}: daemon.socket: {len(daemon.socket.encode())} bytes; a "
                            f"Unix socket's path holds at most {MAX_SOCKET_PATH} (clients could "
                            "not connect to a longer one)")
    if problems:
        raise ConfigError(problems)
    assert daemon is not None and limits is not None
    return Config(daemon=daemon, limits=limits, apps=apps, path=path)


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9137` or `[::1]:9137` -> (host, port); ValueError names the problem."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected HOST:PORT, such as 127.0.0.1:9137 or [::1]:9137")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return host, int(port)


def _listen_problems(listen: str, path: str) -> list[str]:
    """`metrics_listen` must be an address literal and a port: a name would be resolved at
    every start, and could quietly move the metrics to another interface."""
    try:
        host, _port = parse_listen(listen)
        ipaddress.ip_address(host)
    except ValueError as e:
        return [f"{path}: daemon.metrics_listen: {listen!r}: {e}"]
    return []


def _overlaps(daemon: DaemonConfig, apps: dict[str, AppConfig], path: str) -> list[str]:
    """Two apps whose folders or targets are the same, or one inside the other, or inside the
    daemon's state or cache: each would read the other's `current` or file as its own version
    and adopt it (H153). One line per pair."""
    areas: list[tuple[str, str, str]] = [  # (owner, what, where)
        ("daemon", "daemon.state_dir", daemon.state_dir),
        ("daemon", "daemon.cache_dir", daemon.cache_dir)]
    for name, app in apps.items():
        if app.install == "releases" and app.prefix:
            areas.append((name, f"apps.{name}.prefix", app.prefix))
        if app.install == "inplace" and app.target:
            areas.append((name, f"apps.{name}.target", app.target))
    problems = []
    for i, (owner, what, where) in enumerate(areas):
        for other_owner, other_what, other in areas[:i]:
            if owner == other_owner:
                continue
            a, b = os.path.realpath(where), os.path.realpath(other)
            if a == b:
                how = "is the same as"
            elif a.startswith(b.rstrip("/") + "/"):
                how = "is inside"
            elif b.startswith(a.rstrip("/") + "/"):
                how = "contains"
            else:
                continue
            problems.append(f"{path}: {what}: {where} {how} {other_what} {other}; every app "
                            "needs a place of its own (they would take each other's versions "
                            "for their own)")
    return problems


def documented_keys() -> dict[str, list[str]]:
    """Every key the decoder accepts, per table; used by the docs tests."""
    return {
        "daemon": [f.name for f in msgspec.structs.fields(DaemonConfig)],
        "limits": [f.name for f in msgspec.structs.fields(Limits)],
        "apps.NAME": [f.encode_name for f in msgspec.structs.fields(AppConfig)],
    }


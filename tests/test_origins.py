"""The origins of a feed with mirrors, in this process: the order they are asked in and their
back-off (sources/origins.py), the one error when none answers (sources/mirrors.py), and the
configuration's rules for `mirrors`. The real daemon against real nginx: tests/test_mirrors.py."""

from __future__ import annotations

import pytest

from updaterd.errors import (
    DigestMismatch,
    DownloadError,
    FeedError,
    RateLimited,
    Retryable,
    SignatureRefused,
    UpdaterError,
)
from updaterd.host import config
from updaterd.sources.mirrors import every_origin_failed
from updaterd.sources.origins import BACKOFF_FIRST, BACKOFF_MAX, Origins

A, B, C = (f"https://{h}.example/app/manifest.json" for h in "abc")


def test_origins_are_asked_as_configured_until_one_fails() -> None:
    book = Origins()
    assert book.order("x", [A, B, C], now=0) == [A, B, C]
    assert book.failed("x", A, now=100) == BACKOFF_FIRST
    assert book.order("x", [A, B, C], now=100) == [B, C, A]
    assert book.order("x", [A, B, C], now=100 + BACKOFF_FIRST) == [A, B, C]  # over: first again
    assert book.order("y", [A, B, C], now=100) == [A, B, C], "each app its own book"


def test_the_backoff_doubles_with_each_failure_in_a_row_to_an_hour() -> None:
    book = Origins()
    waits = [book.failed("x", A, now=0) for _ in range(8)]
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert waits[-1] == BACKOFF_MAX
    book.served("x", A)
    assert book.of("x", A).in_a_row == 0 and book.order("x", [A, B], now=1) == [A, B]
    assert book.failed("x", A, now=0) == BACKOFF_FIRST, "a success starts it again"


def test_origins_backing_off_are_still_asked_the_soonest_over_first() -> None:
    book = Origins()
    book.failed("x", A, now=0)
    book.failed("x", A, now=0)  # until 120
    book.failed("x", B, now=0)  # until 60
    book.failed("x", C, now=0, not_before=1000)  # a server's Retry-After: until 1000
    assert book.order("x", [A, B, C], now=10) == [B, A, C]


def test_counts_tell_failures_from_refusals() -> None:
    book = Origins()
    book.failed("x", A, now=0)
    book.failed("x", A, now=0, refused=True)
    book.served("x", B)
    a, b = book.of("x", A), book.of("x", B)
    assert (a.failed, a.refused, a.served, a.in_a_row) == (1, 1, 0, 2)
    assert (b.failed, b.refused, b.served, b.in_a_row) == (0, 0, 1, 0)


@pytest.mark.parametrize("errors,kind", [
    ([Retryable("down"), SignatureRefused("stale sig")], FeedError),
    ([Retryable("down"), DigestMismatch("bad bytes")], DownloadError),
    ([RateLimited("wait", 50.0), RateLimited("wait", 20.0)], RateLimited),
    ([RateLimited("wait", 50.0), Retryable("down")], DownloadError),
])
def test_no_origin_answering_is_one_error_naming_each(errors: list[UpdaterError],
                                                      kind: type[UpdaterError]) -> None:
    e = every_origin_failed(list(zip([A, B], errors, strict=True)))
    assert type(e) is kind
    assert str(e) == f"no origin answered: {A}: {errors[0]}; {B}: {errors[1]}"
    if isinstance(e, RateLimited):
        assert e.until == 20.0, "asked again when the first origin answers again"


def test_one_origin_failing_is_its_own_error() -> None:
    alone = SignatureRefused("refused")
    assert every_origin_failed([(A, alone)]) is alone


def problems(app: str) -> list[str]:
    with pytest.raises(config.ConfigError) as e:
        config.parse(f"[apps.a]\nprefix = \"/opt/a\"\n{app}", "u.toml")
    return [p.removeprefix("u.toml: apps.a.") for p in e.value.problems]


KEY = 'public_keys = ["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"]\n'


@pytest.mark.parametrize("app,why", [
    ('source = "directory"\npath = "/srv/feed"\nmirrors = ["https://b.example/m.json"]\n',
     "only a feed fetched over the network"),
    (f'source = "manifest"\nurl = "file:///srv/feed/manifest.json"\n{KEY}'
     'mirrors = ["https://b.example/m.json"]\n', "only a feed fetched over the network"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ["http://b.example/m.json"]\n',
     "plain http:// is allowed only to loopback"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ["ftp://b.example/m.json"]\n',
     "is not an https:// URL of a manifest"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ["{B}", "{A}"]\n',
     "an origin is named twice"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ['
     + ", ".join(f'"https://m{i}.example/m.json"' for i in range(17)) + "]\n",
     "17 mirrors; at most 16"),
])
def test_mirrors_that_cannot_be_used_are_named(app: str, why: str) -> None:
    found = problems(app)
    assert any(p.startswith("mirrors: ") and why in p for p in found), found


def test_good_mirrors_decode_in_order() -> None:
    cfg = config.parse(f'[apps.a]\nprefix = "/opt/a"\nsource = "manifest"\nurl = "{A}"\n{KEY}'
                       f'mirrors = ["{B}", "{C}"]\n', "u.toml")
    assert config.origins(cfg.apps["a"]) == [A, B, C]


def test_feed_check_compares_origins_with_the_newest() -> None:
    from updaterd.release.feedcheck import Report, compare_origins

    reports = {A: Report(serial=7, digest="x"), B: Report(serial=7, digest="y"),
               C: Report(serial=6, digest="z"), "down": Report(problems=["unreachable"])}
    compare_origins(reports)
    assert reports[A].problems == []
    assert reports[B].problems == [f"{B}: serial 7 with other bytes than {A}; hosts that saw "
                                   "one refuse the other (publish to one place, then copy)"]
    assert reports[C].problems == [f"{C}: stale: serial 6, where {A} has 7; hosts that saw 7 "
                                   "pass this origin over"]
    assert reports["down"].problems == ["unreachable"]
    nothing = {A: Report(problems=["x"])}
    compare_origins(nothing)
    assert nothing[A].problems == ["x"]

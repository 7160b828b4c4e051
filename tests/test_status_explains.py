"""What `status` and `metrics` tell an operator: why an available version is not being installed
(rollout share, window, pause, pin, skip, block, channel), and metrics that parse as Prometheus
text."""

from __future__ import annotations

import json

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed


def test_rollout_share_is_explained_and_widened_without_a_new_version(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install")
    art = served_feed.release("1.1.0", rollout=0)
    daemon.ctl("check", "hello", check=True)
    assert "1.1.0: available to 0% of hosts, not this one yet" in daemon.app()["notes"]
    served_feed.publish("1.1.0", [art], rollout=100)  # the same version, a wider share
    out = json.loads(daemon.ctl("--json", "check", "hello", check=True).stdout)["hello"]
    assert out["available"] == "1.1.0"


def test_status_explains_every_reason_a_version_waits(host: Host, nginx: Nginx,
                                                      served_feed: Feed,
                                                      daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, pin="<2")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install")
    served_feed.release("1.1.0", rollout=0)
    served_feed.release("1.2.0")
    served_feed.release("1.3.0", healthy=False)
    served_feed.release("2.0.0")
    daemon.ctl("skip", "hello", "1.2.0", check=True)
    daemon.ctl("update", "hello", "--version", "1.3.0")  # fails its health check: blocked
    daemon.ctl("pause", "hello", check=True)
    daemon.ctl("check", "hello", check=True)
    notes = "\n".join(daemon.app()["notes"])
    for reason in ("1.1.0: available to 0% of hosts", "1.2.0: skipped by the operator",
                   "1.3.0: blocked after a failed health check", "2.0.0: outside pin '<2'",
                   "paused"):
        assert reason in notes, reason
    human = daemon.ctl("status", "hello").stdout
    assert "outside pin" in human and "blocked" in human


def test_a_beta_host_takes_the_final_release_and_is_told_of_other_channels(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """Issue 30: channels are a ladder (updaterd.toml(5)). A beta host on 1.2.0-beta.1 was `up
    to date` when 1.2.0 came out on stable; a newer release on a channel it does not follow is
    named with its channel."""
    served_feed.release("1.2.0-beta.1", channel="beta")
    host.follow(nginx, served_feed, channel="beta")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.2.0-beta.1", what="the beta")
    served_feed.release("1.2.0")
    served_feed.release("1.3.0-alpha.1", channel="alpha")
    out = json.loads(daemon.ctl("--json", "check", "hello", check=True).stdout)["hello"]
    assert out["available"] == "1.2.0"
    assert out["passed_over"] == {"1.3.0-alpha.1": "on the alpha channel; this host follows beta"}
    assert "installed 1.2.0" in daemon.ctl("update", "hello", check=True).stdout
    assert "1.3.0-alpha.1: on the alpha channel; this host follows beta" in \
        daemon.app()["notes"]
    kept = json.loads(daemon.ctl("--json", "list-backups", "hello", check=True).stdout)
    assert [b["version"] for b in kept] == ["1.2.0-beta.1", "1.2.0"]  # as versions, not text


def test_metrics_parse_with_prometheus_client(running: Daemon) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = running.ctl("metrics", check=True).stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["updaterd_app_info"].samples[0]
    assert info.labels == {"app": "hello", "installed": "1.0.0", "available": ""}
    assert families["updaterd_checks"].type == "counter"
    assert families["updaterd_checks"].samples[0].value >= 1
    phases = {s.labels["phase"]: s.value for s in families["updaterd_phase"].samples}
    assert phases["idle"] == 1 and sum(phases.values()) == 1
    # J184: the identity its places are drawn from, as a digest (one per daemon)
    from updaterd import versions
    [identity] = families["updaterd_rollout_identity"].samples
    assert identity.labels == {"id": versions.rollout_identity("test-host")}


def test_a_pin_keeps_the_pre_releases_of_its_bound_out(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """Issue 30: `pin = "<1.2"` let 1.2.0-beta.1 through on a beta host (npm and cargo do
    not)."""
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed, channel="beta", pin="<1.2")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.1.0", what="1.1.0")
    served_feed.release("1.2.0-beta.1", channel="beta")
    out = json.loads(daemon.ctl("--json", "check", "hello", check=True).stdout)["hello"]
    assert (out["available"], out["passed_over"]) == (None, {"1.2.0-beta.1": "outside pin '<1.2'"})

"""The Prometheus text exposition of the daemon's state (`metrics` over the socket)."""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from updaterctl.protocol import Phase
from updaterd import versions
from updaterd.host.config import origins
from updaterd.reports import FALLBACK_REASONS

if TYPE_CHECKING:
    from updaterd.service.view import DaemonView

PHASES: tuple[Phase, ...] = get_args(Phase)


def _label(value: str | None) -> str:
    text = value or ""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(daemon: DaemonView) -> str:
    """Every metric, one family at a time, each with HELP and TYPE."""
    families: list[tuple[str, str, str, list[str]]] = [
        ("updaterd_app_info", "gauge", "Installed and available version of each app.", []),
        ("updaterd_last_check_timestamp_seconds", "gauge", "When the feed was last checked.", []),
        ("updaterd_last_success_timestamp_seconds", "gauge",
         "When a check or update last succeeded.", []),
        ("updaterd_consecutive_failures", "gauge", "Failures since the last success.", []),
        ("updaterd_checks_total", "counter", "Checks started since the daemon started.", []),
        ("updaterd_failures_total", "counter", "Failed checks and updates.", []),
        ("updaterd_rollbacks_total", "counter",
         "Rollbacks: automatic after a failed health check, and by the operator.", []),
        ("updaterd_downloaded_bytes_total", "counter",
         "Bytes downloaded for updates: full artifacts, or delta descriptors and packs.", []),
        ("updaterd_delta_fallbacks_total", "counter",
         "Deltas the feed offered and that were given up for the full artifact, by reason: "
         "no-base, mismatch, costly, shared, failed.", []),
        ("updaterd_phase", "gauge", "1 for the phase each app is in.", []),
        ("updaterd_release_rollbacks_total", "counter",
         "Rollbacks away from each version, of any kind (kept across restarts).", []),
        ("updaterd_release_failed_checks_total", "counter",
         "Rollbacks away from each version after it failed its restart or health check "
         "(kept across restarts).", []),
        ("updaterd_last_switch_timestamp_seconds", "gauge",
         "When the app last changed version: an update committed or a rollback.", []),
        ("updaterd_rollout_identity", "gauge",
         "A digest of the identity this host's rollout places are drawn from (/etc/machine-id "
         "or [daemon] host_id): hosts with the same one are clones that move together.", []),
        ("updaterd_rollout_place", "gauge",
         "This host's place (0-99) in the guarded rollout of each newer release: it takes "
         "the release once the rollout's share is above it.", []),
        ("updaterd_origin_answers_total", "counter",
         "Answers of each origin of a feed with mirrors, by result: served (used), failed "
         "(not reached, an HTTP error, bytes that did not verify), refused (a stale, expired "
         "or badly signed feed).", []),
        ("updaterd_origin_failures_in_a_row", "gauge",
         "Failures and refusals of each origin of a feed with mirrors since it last served.",
         []),
    ]
    rows = {name: lines for name, _t, _h, lines in families}
    rows["updaterd_rollout_identity"].append(
        f'{{id="{versions.rollout_identity(daemon.engine.host_id)}"}} 1')
    for name, w in daemon.workers.items():
        st = w.state()
        app = f'app="{_label(name)}"'
        rows["updaterd_app_info"].append(
            f'{{{app},installed="{_label(st.installed)}",available="{_label(st.available)}"}} 1')
        if st.last_check is not None:
            rows["updaterd_last_check_timestamp_seconds"].append(f"{{{app}}} {st.last_check}")
        if st.last_success is not None:
            rows["updaterd_last_success_timestamp_seconds"].append(
                f"{{{app}}} {st.last_success}")
        rows["updaterd_consecutive_failures"].append(f"{{{app}}} {st.consecutive_failures}")
        c = w.counters
        rows["updaterd_checks_total"].append(f"{{{app}}} {c.checks}")
        rows["updaterd_failures_total"].append(f"{{{app}}} {c.failures}")
        rows["updaterd_rollbacks_total"].append(f"{{{app}}} {c.rollbacks}")
        rows["updaterd_downloaded_bytes_total"].append(
            f'{{{app},plan="full"}} {c.downloaded_bytes - c.delta_bytes}')
        rows["updaterd_downloaded_bytes_total"].append(f'{{{app},plan="delta"}} {c.delta_bytes}')
        for why in FALLBACK_REASONS:  # every reason, 0 too: a rate query needs the series
            rows["updaterd_delta_fallbacks_total"].append(
                f'{{{app},reason="{why}"}} {c.delta_fallbacks.get(why, 0)}')
        for version, n in st.rollbacks_from.items():
            rows["updaterd_release_rollbacks_total"].append(
                f'{{{app},version="{_label(version)}"}} {n}')
        for version, n in st.failed_checks.items():
            rows["updaterd_release_failed_checks_total"].append(
                f'{{{app},version="{_label(version)}"}} {n}')
        switched = [h.at for h in st.history if h.action in ("installed", "rolled_back")]
        if switched:
            rows["updaterd_last_switch_timestamp_seconds"].append(f"{{{app}}} {max(switched)}")
        for version, place in st.rollout_buckets.items():
            rows["updaterd_rollout_place"].append(
                f'{{{app},version="{_label(version)}"}} {place}')
        cfg = w.config()
        for url in origins(cfg) if cfg.source == "manifest" and cfg.mirrors else []:
            health = daemon.engine.origins.of(name, url)
            where = f'{app},origin="{_label(url)}"'
            for result, n in (("served", health.served), ("failed", health.failed),
                              ("refused", health.refused)):
                rows["updaterd_origin_answers_total"].append(f'{{{where},result="{result}"}} {n}')
            rows["updaterd_origin_failures_in_a_row"].append(f"{{{where}}} {health.in_a_row}")
        for phase in PHASES:
            rows["updaterd_phase"].append(
                f'{{{app},phase="{phase}"}} {1 if w.phase == phase else 0}')
    out = []
    for name, kind, help_text, lines in families:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out += [f"{name}{line}" for line in lines]
    return "\n".join(out) + "\n"

"""Which keys this host verifies an app's feed with: the configured `public_keys`, or the
rotation it adopted from them (kept in the app's state with a fingerprint of the configured
keys, so that re-pinning them in the configuration starts the chain again). The engine opens
each refresh's trusted set here and keeps what it accepted."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from updaterd.host import outcome
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState, TrustRoot
from updaterd.trust import minisign
from updaterd.trust.rotation import Keys, parse_keys
from updaterd.trust.trustedset import TrustedSet


def origin_of(cfg: AppConfig) -> str:
    """Which configured keys a stored rotation descends from."""
    keys = sorted(minisign.PublicKey.parse(k).to_base64() for k in cfg.public_keys)
    return hashlib.sha256(f"{cfg.threshold}:{','.join(keys)}".encode()).hexdigest()


def in_use(cfg: AppConfig, state: AppState) -> Keys:
    """The rotated key set when it descends from the configured keys, else those keys."""
    root = state.trust
    if root is not None and root.origin == origin_of(cfg):
        return Keys(parse_keys(root.keys, "stored key set"), root.threshold, root.version)
    return Keys(parse_keys(cfg.public_keys, "public_keys"), cfg.threshold, 0)


def keep(cfg: AppConfig, state: AppState, trust: TrustedSet) -> None:
    """Keep in the state the keys a refresh's set rotated to (nothing when it took none)."""
    if trust.rotated and trust.keys is not None:
        outcome.trust_rotated(state, TrustRoot(
            origin=origin_of(cfg), version=trust.keys.version,
            keys=[k.to_base64() for k in trust.keys.keys], threshold=trust.keys.threshold))


def trusted_set(app: str, cfg: AppConfig, state: AppState, cycle_start: float) -> TrustedSet:
    """One refresh's trusted set: the keys in use and the marks this host keeps."""
    keys = in_use(cfg, state) if cfg.verify == "required" else None
    return TrustedSet(app, keys, now=datetime.fromtimestamp(cycle_start, UTC),
                      serial=state.serial, digest=state.manifest_digest,
                      rollout_mark=state.rollout_mark)

"""The one exception tree of updaterd: each message names the thing and the reason.

    UpdaterError
    ├── ConfigError              the file, one line per problem (exit 2)
    ├── UnsafePath               a path another user could change (pathtrust)
    ├── StateError
    ├── SignatureError
    ├── FeedError
    │   └── SignatureRefused     its signature missing, or not by the keys in use
    ├── PolicyError              not allowed: pinned out, a downgrade ...
    │   └── NoSuchVersion        not in the feed, not kept on disk
    ├── UnknownApp
    ├── DownloadError            for good (retries spent, or not worth one)
    │   ├── DigestMismatch       size, digest or signature of the bytes
    │   ├── Retryable            worth another attempt (network, 5xx, 429, short body)
    │   └── RateLimited          the server said when to ask again
    ├── ArchiveError             one refusal reason per member
    ├── LayoutError              the prefix or target cannot be used
    ├── HealthCheckFailed        restart or health check: rolls back
    ├── LockHeld
    ├── OperationCancelled       called off before the switch
    ├── Busy                     the app is in an operation: said at once
    ├── CancelledByOperator      a client's operation `updaterctl cancel` stopped
    └── TakeOverFailed           `update --now` took over, and the version did not install

(tests/test_errors.py holds this drawing to the classes below.)
"""


class UpdaterError(Exception):
    """Base of every error updaterd raises on purpose."""


class ConfigError(UpdaterError):
    """The configuration file is missing or invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StateError(UpdaterError):
    """The state of an app cannot be read or written."""


class SignatureError(UpdaterError):
    """A key or a signature is malformed or does not verify."""


class FeedError(UpdaterError):
    """A release feed was refused: signature, expiry, serial, schema or content."""


class SignatureRefused(FeedError):
    """A signed document of the feed without its signature, or with one the keys in use did
    not make: the one refusal a cache can cause by pairing a document with another
    version's signature, so the one worth asking again past the cache."""


class PolicyError(UpdaterError):
    """A requested version is not allowed (unknown, pinned out, downgrade without force)."""


class DownloadError(UpdaterError):
    """Fetching a feed or an artifact failed for good (retries exhausted or not retryable)."""


class DigestMismatch(DownloadError):
    """The bytes received do not match the size or digests from the trusted feed."""


class Retryable(DownloadError):
    """A failure worth another attempt (network error, 5xx, 429, a short body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(DownloadError):
    """The server says: no more requests until `until` (epoch seconds). Not retried inline."""

    def __init__(self, message: str, until: float) -> None:
        super().__init__(message)
        self.until = until


class NoSuchVersion(PolicyError):
    """The feed or the disk has no such version."""


class UnknownApp(UpdaterError):
    """The configuration names no such app."""


class ArchiveError(UpdaterError):
    """An archive was refused; the message names the member and the reason."""


class LayoutError(UpdaterError):
    """The install prefix is unusable (not writable, another filesystem, broken links)."""


class HealthCheckFailed(UpdaterError):
    """The restart command or the health check of a new version failed (`signal`: the signal
    that ended its process, when one did)."""

    def __init__(self, message: str, signal: int | None = None) -> None:
        super().__init__(message)
        self.signal = signal


class LockHeld(UpdaterError):
    """Another updaterd process holds the lock file."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path} is held by {holder}: another updaterd is running")
        self.pid = pid


class UnsafePath(UpdaterError):
    """A path updaterd would trust as root can be changed by another user (see pathtrust)."""


class OperationCancelled(UpdaterError):
    """An operation was called off before its switch (by the operator, or a skip)."""


class Busy(UpdaterError):
    """The app is already in an operation: a client is told at once, never kept waiting."""

    def __init__(self, message: str, phase: str, since: float) -> None:
        super().__init__(message)
        self.phase, self.since = phase, since


class CancelledByOperator(UpdaterError):
    """A client's operation that `updaterctl cancel` stopped."""

    def __init__(self, app: str) -> None:
        super().__init__(f"{app}: cancelled by the operator")


class TakeOverFailed(UpdaterError):
    """`update --now` took over the update that waited for its window, and it did not
    install its version; `reason` is what the app's state says."""

    def __init__(self, message: str, reason: str | None) -> None:
        super().__init__(message)
        self.reason = reason

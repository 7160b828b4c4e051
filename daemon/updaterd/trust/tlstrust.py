"""Which certificate authorities updaterd's TLS connections trust: the host's store, or an app's
`ca_file`.

updaterd is a system daemon, so it trusts what the system trusts: OpenSSL's default paths (on
Debian the bundle `update-ca-certificates` writes, /etc/ssl/certs), not a bundle of its own. A
private CA added the host's way is trusted with no updaterd setting, and OpenSSL's own
SSL_CERT_FILE and SSL_CERT_DIR variables still move the store. An app's `ca_file` replaces the
store for that app's connections (feed, downloads, health_url): only that bundle is trusted.
This is the standard library's `ssl.create_default_context()`; the `truststore` package would
add a dependency that, on Linux, reads these same files.
"""

from __future__ import annotations

import os
import ssl

# Where distributions keep the bundle, for a Python whose OpenSSL looks elsewhere (one built
# from source into /usr/local, whose default paths hold nothing).
_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem")
_CONTEXTS: dict[tuple[object, ...], ssl.SSLContext] = {}


def _stamp(path: str | None) -> int | None:
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


def context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying context per set of trust settings, shared (building one reads the whole
    store, 1-2 MiB, and a client is made for each check). A store changed on disk (a CA
    added, `update-ca-certificates`) gives a new one at the next check, without a restart."""
    paths = ssl.get_default_verify_paths()
    key = (ca_file, _stamp(ca_file), os.environ.get("SSL_CERT_FILE"),
           os.environ.get("SSL_CERT_DIR"), paths.cafile, _stamp(paths.cafile), paths.capath,
           _stamp(paths.capath))
    found = _CONTEXTS.get(key)
    if found is None:
        if len(_CONTEXTS) > 16:  # stale stamps of a store that keeps changing
            _CONTEXTS.clear()
        found = _CONTEXTS[key] = _build(ca_file, paths)
    return found


def _build(ca_file: str | None, paths: ssl.DefaultVerifyPaths) -> ssl.SSLContext:
    if ca_file is not None:
        return ssl.create_default_context(cafile=ca_file)
    made = ssl.create_default_context()  # OpenSSL's default paths, SSL_CERT_* honoured
    if paths.cafile is None and paths.capath is None:
        bundle = next((b for b in _BUNDLES if os.path.isfile(b)), None)
        if bundle is not None:
            made.load_verify_locations(cafile=bundle)
    return made


def check_ca_file(path: str) -> str:
    """"" when `path` is a CA bundle TLS can use, else why not (for check-config)."""
    if not os.path.isabs(path):
        return "must be an absolute path"
    try:
        loaded = ssl.create_default_context(cafile=path).cert_store_stats()["x509_ca"]
    except FileNotFoundError:
        return f"{path} does not exist"
    except ssl.SSLError as e:  # an OSError too: first
        return f"{path} is not a PEM bundle of CA certificates ({e.reason or e})"
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if loaded == 0:
        return f"{path} holds no CA certificate"
    return ""

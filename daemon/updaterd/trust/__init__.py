"""What decides whether bytes are trusted, on no state of the host: minisign signatures,
digests and checksum files, the feed's manifest and its checks, the checked extraction of an
archive, which URLs and certificate authorities may be used. Pure where it can be; the layers
above call it with what they read."""

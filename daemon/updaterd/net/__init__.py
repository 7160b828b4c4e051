"""Bytes over the network and into the cache: the HTTP client (retries, resume, ETags, the
address really connected to, rate caps, credentials) and the cache file every source writes
through. Loaded only for a feed on the network, except `cachefile`."""

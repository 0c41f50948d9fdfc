"""Security: the outbound guard (SSRF), TLS, signing keys, sealed secrets, API keys, the audit trail, rate limits."""

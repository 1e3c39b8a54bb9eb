"""Mutual RA-TLS: certificates that carry quotes, their verification, and the TLS layer."""

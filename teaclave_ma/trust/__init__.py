"""Trust state: turning untrusted manifest bytes into a verified manifest, and keeping it."""

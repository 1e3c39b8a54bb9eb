"""Peer-attested JSON-RPC 2.0 over HTTP/1.1 on mutual RA-TLS."""

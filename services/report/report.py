"""A confidential batch job with no attestation code of its own: `teaclave-ma run` attests
it, fetches its API token, unseals its config, and only then starts it."""

import hashlib
import pathlib
import sys

config = pathlib.Path("config.yaml").read_text()
token = pathlib.Path("api-token").read_bytes()
customer = next(line.split(":", 1)[1].strip() for line in config.splitlines() if line.startswith("customer:"))
sys.stdout.write(
    f"report ran for {customer} with an API token of {len(token)} bytes "
    f"(sha256 {hashlib.sha256(token).hexdigest()[:16]}...)\n"
)

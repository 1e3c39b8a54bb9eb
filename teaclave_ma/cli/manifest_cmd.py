"""``teaclave-ma manifest``: author, sign and verify enclave identity manifests."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

import attrs

from teaclave_ma.attestation.quote import TdReportBody, parse_quote
from teaclave_ma.cli.output import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNUSABLE,
    add_force_flag,
    add_json_flag,
    emit,
    refuse_existing,
)
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.enclave.image import load_image
from teaclave_ma.enclave.sigstruct_reader import SIGSTRUCT_SIZE, parse_sgx_sigstruct
from teaclave_ma.errors import InputError
from teaclave_ma.formats.manifest import (
    _TD_SIZES,
    MAX_MANIFEST_BYTES,
    PIN_FIELDS,
    RELEASE_CHECKS,
    TD_FIELDS,
    Accepted,
    AcceptedIdentity,
    AcceptedTdIdentity,
    Manifest,
    PlatformPins,
    parse_hex_list,
    parse_manifest,
)
from teaclave_ma.formats.signature import read_signature_dir, signature_path, write_signature
from teaclave_ma.formats.strict import expect_hex, expect_utc_time, format_utc, read_bounded
from teaclave_ma.formats.trust import MAX_TRUST_BYTES, parse_trust_file
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.trust.manifest_trust import ManifestRejected, ManifestTrust
from teaclave_ma.trust.signing import sign_manifest


def register(subparsers: Any) -> None:
    manifest = subparsers.add_parser("manifest", help="enclave identity manifests")
    commands = manifest.add_subparsers(dest="manifest_command", required=True, metavar="COMMAND")

    new = commands.add_parser("new", help="start an empty manifest")
    new.add_argument(
        "--version",
        type=int,
        required=True,
        dest="manifest_version",
        help="manifest version; services refuse any version older than one they accepted",
    )
    when = new.add_mutually_exclusive_group(required=True)
    when.add_argument("--expires", help="UTC expiry in the future, ISO 8601 ending in Z")
    when.add_argument("--valid-days", type=int, help="expire this many days from now (>= 1)")
    new.add_argument("--out", type=Path, required=True, help="manifest file to write")
    add_force_flag(new)
    add_json_flag(new)
    new.set_defaults(func=_new)

    add = commands.add_parser("add", help="accept an enclave identity for a service")
    add.add_argument("manifest", type=Path, help="manifest file to update in place")
    add.add_argument("--service", help="service name (default: the image's service)")
    source = add.add_mutually_exclusive_group()
    source.add_argument(
        "--from-image", type=Path, help="take the identity from a built enclave image"
    )
    source.add_argument(
        "--from-sigstruct",
        type=Path,
        metavar="SIG",
        help="take the identity from a real SGX SIGSTRUCT (gramine-sgx-sign's or the SDK's .sig)",
    )
    source.add_argument(
        "--from-quote",
        type=Path,
        metavar="QUOTE",
        help="take the identity from an SGX or TDX quote (read, not verified: check it first "
        "with `teaclave-ma quote verify`)",
    )
    add.add_argument("--mr-enclave", help="MRENCLAVE to accept, 64 hex digits")
    add.add_argument("--mr-signer", help="MRSIGNER to accept, 64 hex digits")
    add.add_argument("--isv-prod-id", type=int, help="ISV product id to accept")
    add.add_argument(
        "--min-isv-svn",
        type=int,
        help="lowest ISV SVN to accept (default with --from-image: its SVN)",
    )
    add.add_argument(
        "--debug", action="store_true", help="accept a debug enclave (never in production)"
    )
    for name in TD_FIELDS:
        add.add_argument(
            f"--{name.replace('_', '-')}",
            metavar="HEX",
            help=f"a TDX entry's {name} ({_TD_SIZES.get(name, 48)} bytes hex)",
        )
    add.add_argument(
        "--fmspc",
        action="append",
        dest="fmspcs",
        metavar="HEX",
        help="admit peers only on platforms of this FMSPC (6 bytes hex; repeatable)",
    )
    add.add_argument(
        "--ppid",
        action="append",
        dest="ppids",
        metavar="HEX",
        help="admit peers only on the platform of this PPID (16 bytes hex; repeatable)",
    )
    add_json_flag(add)
    add.set_defaults(func=_add)

    release = commands.add_parser(
        "release", help="say which services the kms may release a secret to (secrets:)"
    )
    release.add_argument("manifest", type=Path, help="manifest file to update in place")
    release.add_argument("secret", help="the secret's name in the kms")
    release.add_argument(
        "--allow",
        action="append",
        required=True,
        metavar="SERVICE",
        help="a service that may receive it, as the manifest accepts it (repeatable)",
    )
    release.add_argument(
        "--min-config-svn", type=int, default=0, help="lowest CONFIGSVN of a receiver"
    )
    release.add_argument(
        "--relax",
        action="append",
        default=[],
        metavar="CHECK=REASON",
        help=f"turn one check off, with the reason logged at every start ({', '.join(RELEASE_CHECKS)})",
    )
    add_json_flag(release)
    release.set_defaults(func=_release)

    sign = commands.add_parser("sign", help="sign the manifest's exact bytes as one auditor")
    sign.add_argument("manifest", type=Path, help="manifest file to sign")
    sign.add_argument("--key", type=Path, required=True, help="the auditor's private key PEM")
    sign.add_argument("--out-dir", type=Path, required=True, help="signature directory")
    add_force_flag(sign, "this auditor's signature over other bytes")
    add_json_flag(sign)
    sign.set_defaults(func=_sign)

    verify = commands.add_parser("verify", help="verify a manifest as a service would")
    verify.add_argument("manifest", type=Path, help="manifest file to verify")
    verify.add_argument("--trust", type=Path, required=True, help="the trust file")
    verify.add_argument("--signatures", type=Path, required=True, help="signature directory")
    verify.add_argument("--now", help="verify as of this UTC time (ISO 8601)")
    add_json_flag(verify)
    verify.set_defaults(func=_verify)


def _new(args: argparse.Namespace) -> int:
    # Signed with the rest: services never let their clock read earlier than this.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if args.expires:
        expires = expect_utc_time(args.expires, "--expires")
        # No service would accept it: refuse rather than hand the auditors a dead manifest.
        if expires <= now:
            raise InputError(
                "--expires", f"{format_utc(expires)} is not in the future (now {format_utc(now)})"
            )
    elif args.valid_days < 1:
        raise InputError("--valid-days", f"must be at least 1, got {args.valid_days}")
    else:
        expires = now + dt.timedelta(days=args.valid_days)
    if args.manifest_version < 0:
        raise InputError("--version", f"must be >= 0, got {args.manifest_version}")
    manifest = Manifest(version=args.manifest_version, expires=expires, enclaves={}, issued=now)
    atomic_write(args.out, manifest.to_bytes(), overwrite=args.force)
    emit(
        args,
        {
            "manifest": str(args.out),
            "version": manifest.version,
            "issued": format_utc(now),
            "expires": format_utc(expires),
        },
        [
            f"wrote {args.out}: version {manifest.version}, issued {format_utc(now)}, "
            f"expires {format_utc(expires)}"
        ],
    )
    return EXIT_OK


# A quote is a few kB; its certification data is bounded at 64 kB by the parser.
MAX_QUOTE_FILE_BYTES = 1 << 20


def _sgx_entry(identity: SgxIdentity, args: argparse.Namespace) -> AcceptedIdentity:
    return AcceptedIdentity(
        mr_enclave=identity.mr_enclave,
        mr_signer=identity.mr_signer,
        isv_prod_id=identity.isv_prod_id,
        min_isv_svn=identity.isv_svn if args.min_isv_svn is None else args.min_isv_svn,
        debug=identity.debug,
    )


def _td_entry(fields: dict[str, bytes]) -> AcceptedTdIdentity:
    return AcceptedTdIdentity(**fields, pins=PlatformPins())


def _require(flags: dict[str, object], source: str) -> None:
    missing = [flag for flag, value in flags.items() if value is None]
    if missing:
        raise InputError("manifest add", f"give {source}, or all of: {', '.join(missing)}")


def _refuse_other_flags(source: str, flags: dict[str, object]) -> None:
    # A measurement flag beside a file would be silently ignored: refuse the mix instead.
    given = [flag for flag, value in flags.items() if value not in (None, False)]
    if given:
        raise InputError("manifest add", f"{source} gives the identity; drop {', '.join(given)}")


def _sgx_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "--mr-enclave": args.mr_enclave,
        "--mr-signer": args.mr_signer,
        "--isv-prod-id": args.isv_prod_id,
        "--debug": args.debug,
    }


def _td_flags(args: argparse.Namespace) -> dict[str, object]:
    return {f"--{name.replace('_', '-')}": getattr(args, name) for name in TD_FIELDS}


def _identity_from_file(args: argparse.Namespace) -> tuple[str | None, Accepted] | None:
    """The service name the file gives (if any) and its entry, or None without a file."""
    if args.from_image is not None:
        _refuse_other_flags("--from-image", {**_sgx_flags(args), **_td_flags(args)})
        image = load_image(args.from_image)
        return image.service.name, _sgx_entry(image.identity, args)
    if args.from_sigstruct is not None:
        _refuse_other_flags("--from-sigstruct", {**_sgx_flags(args), **_td_flags(args)})
        data = read_bounded(args.from_sigstruct, SIGSTRUCT_SIZE)
        sigstruct = parse_sgx_sigstruct(data, str(args.from_sigstruct))
        return None, _sgx_entry(sigstruct.identity, args)
    if args.from_quote is not None:
        _refuse_other_flags("--from-quote", {**_sgx_flags(args), **_td_flags(args)})
        quote = parse_quote(read_bounded(args.from_quote, MAX_QUOTE_FILE_BYTES))
        if isinstance(quote.body, TdReportBody):
            if args.min_isv_svn is not None:
                raise InputError("--min-isv-svn", "a TDX entry has no ISV SVN")
            identity = quote.body.identity()
            return None, _td_entry({name: getattr(identity, name) for name in TD_FIELDS})
        return None, _sgx_entry(quote.body.identity(), args)
    return None


def _identity_from_args(args: argparse.Namespace) -> tuple[str, Accepted]:
    from_file = _identity_from_file(args)
    if from_file is not None:
        named, entry = from_file
        service = args.service or named
        if service is None:
            raise InputError("--service", "required: a SIGSTRUCT or a quote names no service")
        return service, entry
    if any(value is not None for value in _td_flags(args).values()):
        _refuse_other_flags("a TDX entry", {**_sgx_flags(args), "--min-isv-svn": args.min_isv_svn})
        _require({"--service": args.service, **_td_flags(args)}, "--from-quote")
        return args.service, _td_entry(
            {
                name: expect_hex(
                    getattr(args, name), f"--{name.replace('_', '-')}", _TD_SIZES.get(name, 48)
                )
                for name in TD_FIELDS
            }
        )
    _require(
        {
            "--service": args.service,
            "--mr-enclave": args.mr_enclave,
            "--mr-signer": args.mr_signer,
            "--isv-prod-id": args.isv_prod_id,
            "--min-isv-svn": args.min_isv_svn,
        },
        "--from-image, --from-sigstruct",
    )
    return args.service, AcceptedIdentity(
        mr_enclave=expect_hex(args.mr_enclave, "--mr-enclave", 32),
        mr_signer=expect_hex(args.mr_signer, "--mr-signer", 32),
        isv_prod_id=args.isv_prod_id,
        min_isv_svn=args.min_isv_svn,
        debug=args.debug,
    )


def _pins_from_args(args: argparse.Namespace) -> PlatformPins:
    return PlatformPins(
        **{
            name: parse_hex_list(getattr(args, name), f"--{name[:-1]}", nbytes)
            for name, nbytes in PIN_FIELDS.items()
            if getattr(args, name)
        }
    )


def _add(args: argparse.Namespace) -> int:
    manifest = parse_manifest(read_bounded(args.manifest, MAX_MANIFEST_BYTES), str(args.manifest))
    service, entry = _identity_from_args(args)
    entry = attrs.evolve(entry, pins=_pins_from_args(args))
    changed, signatures = _rewrite(
        args.manifest, manifest, manifest.with_entry(service, entry), "it already did"
    )
    emit(
        args,
        {
            "manifest": str(args.manifest),
            "service": service,
            "entry": entry.to_document(),
            "changed": changed,
        },
        [
            f"{args.manifest}: service {service!r} accepts "
            + (
                f"mr_td {entry.mr_td.hex()}"
                if isinstance(entry, AcceptedTdIdentity)
                else f"mr_enclave {entry.mr_enclave.hex()}"
            ),
            *(
                f"  only on platforms with {name} {' or '.join(value.hex() for value in values)}"
                for name, values in (("fmspc", entry.pins.fmspcs), ("ppid", entry.pins.ppids))
                if values
            ),
            signatures,
        ],
    )
    return EXIT_OK


def _rewrite(path: Path, before: Manifest, after: Manifest, already: str) -> tuple[bool, str]:
    """Write ``after`` over ``path`` if it differs from ``before``: whether it did, and the
    line telling what that means for the auditors' signatures."""
    if after == before:
        return False, f"  {already}: the file is unchanged and its signatures still apply"
    atomic_write(path, after.to_bytes())
    return (
        True,
        "  the bytes changed: existing signatures no longer verify; auditors must sign again",
    )


def _release(args: argparse.Namespace) -> int:
    manifest = parse_manifest(read_bounded(args.manifest, MAX_MANIFEST_BYTES), str(args.manifest))
    relaxed: dict[str, str] = {}
    for item in args.relax:
        check, separator, reason = item.partition("=")
        if not separator:
            raise InputError("--relax", f"expected CHECK=REASON, got {item!r}")
        relaxed[check] = reason
    document: dict[str, object] = {"allow": args.allow, "min_config_svn": args.min_config_svn}
    if relaxed:
        document["relax"] = relaxed
    updated = manifest.with_release(args.secret, document)
    changed, signatures = _rewrite(args.manifest, manifest, updated, "it already was")
    rule = updated.secrets[args.secret]
    emit(
        args,
        {
            "manifest": str(args.manifest),
            "secret": args.secret,
            "rule": rule.to_document(),
            "changed": changed,
        },
        [
            f"{args.manifest}: secret {args.secret!r} may be released to "
            + ", ".join(repr(service) for service in rule.allow),
            *(f"  {check} turned off: {reason}" for check, reason in rule.relaxed.items()),
            signatures,
        ],
    )
    return EXIT_OK


def _sign(args: argparse.Namespace) -> int:
    manifest_bytes = read_bounded(args.manifest, MAX_MANIFEST_BYTES)
    # Refuse to sign what no service could accept, so a typo never gets an auditor's name on it.
    manifest = parse_manifest(manifest_bytes, str(args.manifest))
    key = AuditorSigningKey.load(args.key)
    signature = sign_manifest(key, manifest_bytes)
    path = signature_path(args.out_dir, signature.key_id)
    # Ed25519 is deterministic: the same bytes again is this very signature, not a replacement.
    unchanged = path.is_file() and path.read_bytes() == signature.to_bytes()
    if not unchanged:
        refuse_existing(path, args.force)
        write_signature(args.out_dir, signature)
    emit(
        args,
        {
            "signature": str(path),
            "key_id": signature.key_id,
            "version": manifest.version,
            "changed": not unchanged,
        },
        [
            f"signed manifest v{manifest.version} as {signature.key_id[:16]}...: {path}"
            + (" (already there, unchanged)" if unchanged else "")
        ],
    )
    return EXIT_OK


def _claimed(manifest_bytes: bytes, what: str) -> Manifest | None:
    """What a rejected manifest says about itself (for the report only, never trusted)."""
    try:
        return parse_manifest(manifest_bytes, what)
    except InputError:
        return None


def _verify(args: argparse.Namespace) -> int:
    trust = parse_trust_file(read_bounded(args.trust, MAX_TRUST_BYTES), str(args.trust))
    now = expect_utc_time(args.now, "--now") if args.now else dt.datetime.now(dt.UTC)
    manifest_bytes = read_bounded(args.manifest, MAX_MANIFEST_BYTES)
    signatures = read_signature_dir(args.signatures)
    try:
        verified = ManifestTrust(trust).check(manifest_bytes, signatures, now)
    except ManifestRejected as exc:
        claimed = _claimed(manifest_bytes, str(args.manifest))
        emit(
            args,
            {
                "valid": False,
                "version": claimed.version if claimed else None,
                "expires": format_utc(claimed.expires) if claimed else None,
                "signed_by": [],
                "reasons": [reason.message for reason in exc.reasons],
                "checks": sorted(exc.checks),
            },
            [
                "manifest REJECTED" + (f" (v{claimed.version}, unverified):" if claimed else ":"),
                *(f"  - {reason.message}" for reason in exc.reasons),
            ],
        )
        # Signed but unparsable is a broken file, not a forgery: unusable input, like any
        # other malformed document.
        return EXIT_UNUSABLE if exc.checks == {"format"} else EXIT_REFUSED
    manifest = verified.manifest
    emit(
        args,
        {
            "valid": True,
            "version": manifest.version,
            "expires": format_utc(manifest.expires),
            "signed_by": list(verified.signed_by),
            "signers": list(verified.signer_names),
            "services": sorted(manifest.enclaves),
            "reasons": [],
            "notes": list(verified.notes),
        },
        [
            f"manifest v{manifest.version} is valid until {format_utc(manifest.expires)}",
            f"  signed by {len(verified.signed_by)} of {len(trust.auditors)} auditors "
            f"(threshold {trust.threshold}): {', '.join(verified.signer_names)}",
            f"  services: {', '.join(sorted(manifest.enclaves)) or 'none'}",
            *(f"  note: {note}" for note in verified.notes),
        ],
    )
    return EXIT_OK

"""Strict schemas: every bad value is a typed error naming the field."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.errors import InputError
from teaclave_ma.formats.manifest import (
    MAX_MANIFEST_BYTES,
    TD_FIELDS,
    AcceptedIdentity,
    AcceptedTdIdentity,
    Manifest,
    ManifestFormatError,
    PlatformPins,
    parse_manifest,
)
from teaclave_ma.formats.service_config import SERVICE_NAME, parse_service_config
from teaclave_ma.formats.signature import MAX_SIGNATURE_BYTES, SignatureFormatError, parse_signature
from teaclave_ma.formats.trust import (
    MAX_TRUST_BYTES,
    TrustedAuditor,
    TrustFile,
    TrustFileError,
    parse_trust_file,
)
from teaclave_ma.testing import AuditorPanel

GOOD = """version: 1
expires: "2027-01-01T00:00:00Z"
enclaves:
  storage:
  - mr_enclave: {a}
    mr_signer: {b}
    isv_prod_id: 4
    min_isv_svn: 1
  - mr_enclave: {a}
    mr_signer: {b}
    isv_prod_id: 4
    min_isv_svn: 2
    debug: false
"""


def test_good_manifest_parses() -> None:
    manifest = parse_manifest(GOOD.format(a="aa" * 32, b="bb" * 32).encode())
    assert manifest.version == 1
    assert [e.min_isv_svn for e in manifest.enclaves["storage"]] == [1, 2]


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace(
                "aa" * 32
                + "\n    mr_signer: "
                + "bb" * 32
                + "\n    isv_prod_id: 4\n    min_isv_svn: 2",
                "a" * 63
                + "\n    mr_signer: "
                + "bb" * 32
                + "\n    isv_prod_id: 4\n    min_isv_svn: 2",
            ),
            "enclaves.storage[1].mr_enclave",
            "expected 64 hex characters, got 63",
        ),
        (
            GOOD.format(a="zz" * 32, b="bb" * 32),
            "enclaves.storage[0].mr_enclave",
            "expected hex characters",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace(
                "isv_prod_id: 4\n    min_isv_svn: 1", "isv_prod_id: 70000\n    min_isv_svn: 1"
            ),
            "enclaves.storage[0].isv_prod_id",
            "0..65535",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace("debug: false", "debug: 0"),
            "enclaves.storage[1].debug",
            "true or false",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace("version: 1", "version: true"),
            "version",
            "expected an integer",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace("version: 1", "version: 1\ncolour: red"),
            "colour",
            "unknown field",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace(
                '"2027-01-01T00:00:00Z"', '"2027-01-01T00:00:00"'
            ),
            "expires",
            "UTC",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace("version: 1", "version: 1\nversion: 2"),
            "version",
            "duplicate key",
        ),
        (
            GOOD.format(a="aa" * 32, b="bb" * 32).replace("  storage:", "  Storage!:"),
            "enclaves.Storage!",
            "invalid service name",
        ),
        ("- just\n- a list\n", "manifest", "expected a mapping"),
        ("version: [\n", "manifest", "not valid YAML"),
    ],
)
def test_manifest_errors_name_field_and_value(data: str, field: str, fragment: str) -> None:
    with pytest.raises(ManifestFormatError) as caught:
        parse_manifest(data.encode())
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_non_utf8_manifest_is_a_typed_error() -> None:
    with pytest.raises(ManifestFormatError, match="not UTF-8"):
        parse_manifest(b"version: \xff\n")


def test_trust_file_round_trip(auditor_panel: AuditorPanel) -> None:
    assert parse_trust_file(auditor_panel.trust_bytes) == auditor_panel.trust


@pytest.mark.parametrize(("threshold", "count"), [(0, 3), (4, 3)])
def test_trust_threshold_must_be_between_one_and_n(threshold: int, count: int) -> None:
    auditors = tuple(
        TrustedAuditor(f"a{i}", AuditorSigningKey.generate().public_key) for i in range(count)
    )
    with pytest.raises(TrustFileError) as caught:
        TrustFile(threshold=threshold, auditors=auditors)
    assert caught.value.field == "threshold"
    text = (
        TrustFile(threshold=1, auditors=auditors)
        .to_bytes()
        .replace(b"threshold: 1", f"threshold: {threshold}".encode())
    )
    with pytest.raises(TrustFileError, match="threshold"):
        parse_trust_file(text)


def test_trust_file_refuses_one_key_under_two_names() -> None:
    key = AuditorSigningKey.generate().public_key
    with pytest.raises(TrustFileError, match="duplicate keys would inflate the threshold"):
        TrustFile(
            threshold=2, auditors=(TrustedAuditor("alice", key), TrustedAuditor("mallory", key))
        )


def test_trust_file_key_id_must_match_the_key(auditor_panel: AuditorPanel) -> None:
    first = auditor_panel.auditors[0].key_id
    tampered = auditor_panel.trust_bytes.replace(first.encode(), b"0" * 64)
    with pytest.raises(TrustFileError) as caught:
        parse_trust_file(tampered)
    assert caught.value.field == "auditors[0].key_id"


def test_trust_file_with_a_non_ed25519_key_is_refused(auditor_panel: AuditorPanel) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    text = "threshold: 1\nauditors:\n- name: x\n  public_key: |\n" + "".join(
        f"    {line}\n" for line in pem.splitlines()
    )
    with pytest.raises(TrustFileError, match="expected an Ed25519 key"):
        parse_trust_file(text.encode())


def test_service_config_is_strict() -> None:
    good = b"name: storage\nentrypoint: m:f\nenclave: {isv_prod_id: 1, isv_svn: 1}\ninbound: [frontend]\n"
    assert parse_service_config(good).inbound == ("frontend",)
    for bad, fragment in [
        (good + b"outbound: [a, a]\n", "listed twice"),
        (good.replace(b"m:f", b"m.f"), "does not match"),
        (good + b"tcb: {allow_status: [Revoked]}\n", "does not match"),
        (good + b"allow_tcb_status: [UpToDate]\n", "moved: write it as tcb"),
        (good.replace(b"isv_svn: 1", b"isv_svn: -1"), "0..65535"),
    ]:
        with pytest.raises(InputError, match=fragment):
            parse_service_config(bad)


def test_manifest_tdx_form() -> None:
    entry = "    - mr_td: {m}\n      rtmr0: '{z}'\n      rtmr1: '{z}'\n      rtmr2: '{z}'\n      rtmr3: '{z}'\n      td_attributes: '0000001000000000'\n      xfam: e702060000000000\n"
    text = 'version: 1\nexpires: "2027-01-01T00:00:00Z"\nenclaves:\n  storage:\n' + entry.format(
        m="ab" * 48, z="00" * 48
    )
    manifest = parse_manifest(text.encode())
    (accepted,) = manifest.enclaves["storage"]
    assert accepted.to_document()["mr_td"] == "ab" * 48
    assert parse_manifest(manifest.to_bytes()) == manifest
    with pytest.raises(ManifestFormatError) as caught:
        parse_manifest(text.replace("ab" * 48, "ab" * 32).encode())
    assert caught.value.field == "enclaves.storage[0].mr_td"
    assert "expected 96 hex characters, got 64" in str(caught.value)
    with pytest.raises(ManifestFormatError, match="put it in quotes"):
        parse_manifest(text.replace("'" + "00" * 48 + "'", "00" * 48).encode())
    with pytest.raises(ManifestFormatError, match="missing required field"):
        parse_manifest(text.replace("      xfam: e702060000000000\n", "").encode())


def test_complex_yaml_keys_are_refused() -> None:
    with pytest.raises(ManifestFormatError, match="mapping keys must be plain values"):
        parse_manifest(b"? {a: 1}\n: 2\n")
    with pytest.raises(ManifestFormatError, match="mapping keys must be plain values"):
        parse_manifest(b"version: 1\nenclaves:\n  ? [x]\n  : []\n")


# -- writing and reading back ----------------------------------------------------------------

# Bytes whose hex some YAML version reads as a number unquoted: all digits ("0000", "0800"),
# "0b" then binary digits, "1e..." (a YAML 1.2 float); each must be written quoted.
NUMBER_LIKE_BYTES = [
    b"\x00",
    b"\x01",
    b"\x08",
    b"\x0b",
    b"\x10",
    b"\x11",
    b"\x12",
    b"\x1e",
    b"\x77",
]


SERVICE_NAMES = st.one_of(
    st.from_regex(SERVICE_NAME, fullmatch=True),
    st.sampled_from(["true", "false", "yes", "no", "on", "off", "null", "y", "n"]),
)


def fixed_bytes(size: int) -> st.SearchStrategy[bytes]:
    """Random bytes, or a run of one number-like byte then another (``0b0101..02``)."""
    runs = st.builds(
        lambda first, second, cut: (first * cut + second * size)[:size],
        st.sampled_from(NUMBER_LIKE_BYTES),
        st.sampled_from(NUMBER_LIKE_BYTES),
        st.integers(0, size),
    )
    return st.one_of(st.binary(min_size=size, max_size=size), runs)


PINS = st.builds(
    PlatformPins,
    fmspcs=st.lists(fixed_bytes(6), unique=True, max_size=2).map(tuple),
    ppids=st.lists(fixed_bytes(16), unique=True, max_size=2).map(tuple),
)
SGX_ENTRIES = st.builds(
    AcceptedIdentity,
    fixed_bytes(32),
    fixed_bytes(32),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.booleans(),
    pins=PINS,
)
TDX_ENTRIES = st.builds(
    AcceptedTdIdentity,
    *(fixed_bytes(8 if name in ("td_attributes", "xfam") else 48) for name in TD_FIELDS),
    pins=PINS,
)
MANIFESTS = st.builds(
    Manifest,
    version=st.integers(0, (1 << 63) - 1),
    expires=st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(9999, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda moment: moment.replace(microsecond=0)),
    enclaves=st.dictionaries(
        SERVICE_NAMES,
        st.lists(st.one_of(SGX_ENTRIES, TDX_ENTRIES), min_size=1, max_size=3).map(tuple),
        max_size=4,
    ),
)


@settings(max_examples=200, deadline=None)
@given(manifest=MANIFESTS)
def test_written_manifests_read_back_the_same(manifest: Manifest) -> None:
    assert parse_manifest(manifest.to_bytes()) == manifest


def test_a_duplicate_service_is_refused() -> None:
    text = AuditorPanel.manifest(
        {"storage": [AcceptedIdentity(b"\xaa" * 32, b"\xbb" * 32, 1, 1)]}
    ).decode()
    service = text[text.index("  storage:") :]
    with pytest.raises(ManifestFormatError) as caught:
        parse_manifest((text + service).encode())
    assert caught.value.field == "storage"
    assert "duplicate key" in str(caught.value)


def test_impossible_dates_and_bad_explicit_tags_are_typed_errors() -> None:
    for line in ["expires: 2027-02-30T00:00:00Z", "expires: !!int soon"]:
        document = f"version: 1\n{line}\nenclaves: {{}}\n".encode()
        with pytest.raises(ManifestFormatError, match="a value cannot be read"):
            parse_manifest(document)


def test_documents_larger_than_their_limit_are_refused_unparsed() -> None:
    for parser, limit, error in [
        (parse_manifest, MAX_MANIFEST_BYTES, ManifestFormatError),
        (parse_trust_file, MAX_TRUST_BYTES, TrustFileError),
        (parse_signature, MAX_SIGNATURE_BYTES, SignatureFormatError),
    ]:
        with pytest.raises(error, match=f"larger than the limit of {limit} bytes"):
            parser(b"#" * (limit + 1))


@pytest.mark.parametrize(
    "value",
    ["!!bool maybe", "!!timestamp x", "!!int x", "!!float x"],
)
def test_explicit_tags_pyyaml_cannot_construct_are_typed_errors(value: str) -> None:
    """PyYAML's constructors raise KeyError, AttributeError or ValueError for these; a stray
    signature file holding one must not stop a service from reloading its manifest."""
    data = f"key_id: {'a' * 64}\nalgorithm: {value}\nsignature: {'b' * 128}\n".encode()
    with pytest.raises(InputError, match="a value cannot be read"):
        parse_signature(data, "stray.sig")

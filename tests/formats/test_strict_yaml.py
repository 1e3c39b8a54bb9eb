"""Decimal-only strict YAML: in every strict file, an integer is written in decimal and a
boolean as true or false; any other spelling that some YAML version reads as a number or a
boolean is a typed error naming the field, how YAML 1.1 and 1.2 read it, and what to write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.manifest import ManifestFormatError, parse_manifest
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.formats.strict import UnsettledScalar, dump_yaml, load_yaml_mapping, unsettled
from teaclave_ma.formats.trust import TrustFileError, parse_trust_file
from teaclave_ma.testing import AuditorPanel

# spelling -> how YAML 1.1 and 1.2 read it, and what to write instead
INTEGER_SPELLINGS = {
    "010": ("YAML 1.1 would read it as octal 8, YAML 1.2 as 10", "write 8 or 10"),
    "1:0": ("YAML 1.1 would read it as sexagesimal 60", "write 60"),
    "1_000": ("YAML 1.1 would read it as 1000", "write 1000"),
    "0x1F": ("YAML 1.1 and 1.2 would read it as hexadecimal 31", "write 31"),
    "0o17": ("YAML 1.2 would read it as octal 15", "write 15"),
    "0b101": ("YAML 1.1 would read it as binary 5", "write 5"),
    "0999": ("YAML 1.2 would read it as 999", "write 999"),
    "+5": ("YAML 1.1 and 1.2 would read it as 5", "write 5"),
    "-0": ("YAML 1.1 and 1.2 would read it as 0", "write 0"),
}
BOOLEAN_SPELLINGS = {
    "yes": ("YAML 1.1 would read it as true", "write true"),
    "no": ("YAML 1.1 would read it as false", "write false"),
    "on": ("YAML 1.1 would read it as true", "write true"),
    "off": ("YAML 1.1 would read it as false", "write false"),
    "y": ("YAML 1.1 would read it as true", "write true"),
    "n": ("YAML 1.1 would read it as false", "write false"),
    "True": ("YAML 1.1 and 1.2 would read it as true", "write true"),
    "FALSE": ("YAML 1.1 and 1.2 would read it as false", "write false"),
}
SPELLINGS = {**INTEGER_SPELLINGS, **BOOLEAN_SPELLINGS}


@attrs.frozen
class StrictFile:
    """A valid document of one strict file kind with three slots (an integer, a boolean
    and a string field: where a kind has no such field, the slot is None), the parser, and
    the error class it raises."""

    template: str
    parse: Callable[[bytes], object]
    error: type[InputError]
    int_field: str | None
    bool_field: str | None
    str_field: str
    str_default: str
    echoes_values: bool = True  # the secrets file never repeats a value in an error
    names_itself: str = ""  # the trust file's errors end by naming the file

    def problem(self, error: InputError) -> str:
        """The error's problem, less the file's name (which is asserted to be there)."""
        assert error.problem.endswith(self.names_itself)
        return error.problem.removesuffix(self.names_itself)

    def document(self, *, int_: str = "1", bool_: str = "true", str_: str | None = None) -> bytes:
        text = str_ if str_ is not None else self.str_default
        return self.template.format(int=int_, bool=bool_, str=text).encode()


HEX = "ab" * 32


def _trust_template() -> str:
    text = AuditorPanel(count=1, threshold=1).trust_bytes.decode()
    assert "threshold: 1\n" in text and "- name: auditor0\n" in text
    text = text.replace("{", "{{").replace("}", "}}")
    return text.replace("threshold: 1\n", "threshold: {int}\n").replace(
        "- name: auditor0\n", "- name: {str}\n"
    )


FILES = {
    "manifest": StrictFile(
        'version: 1\nexpires: "2030-01-01T00:00:00Z"\nenclaves:\n  storage:\n'
        f"  - mr_enclave: {HEX}\n    mr_signer: {HEX}\n    isv_prod_id: 4\n"
        "    min_isv_svn: {int}\n    debug: {bool}\n"
        f"  {{str}}:\n  - mr_enclave: {HEX}\n    mr_signer: {HEX}\n"
        "    isv_prod_id: 5\n    min_isv_svn: 1\n",
        parse_manifest,
        ManifestFormatError,
        "enclaves.storage[0].min_isv_svn",
        "enclaves.storage[0].debug",
        "enclaves",  # a service name: a mapping key
        "frontend",
    ),
    "trust file": StrictFile(
        _trust_template(),
        parse_trust_file,
        TrustFileError,
        "threshold",
        None,
        "auditors[0].name",
        "auditor0",
        names_itself=" (in trust file)",
    ),
    "service.yaml": StrictFile(
        "name: storage\nentrypoint: m:f\ninbound: [{str}]\n"
        "enclave: {{isv_prod_id: 1, isv_svn: {int}, debug: {bool}}}\n",
        parse_service_config,
        InputError,
        "enclave.isv_svn",
        "enclave.debug",
        "inbound[0]",
        "frontend",
    ),
    "runtime.yaml": StrictFile(
        # Nothing here is a number or a boolean: those settings decide trust, so they are
        # measured (service.yaml), not the host's.
        "listen: 127.0.0.1:7003\nstate_dir: state\nsettings: {{mode: {str}}}\n"
        "attestation: {{simulated_platform: sim}}\n",
        lambda data: parse_runtime_config(data, Path("/srv")),
        ConfigError,
        None,
        None,
        "settings.mode",
        "fast",
    ),
    "manifest secrets": StrictFile(
        'version: 1\nexpires: "2030-01-01T00:00:00Z"\nenclaves: {{}}\n'
        "secrets:\n  token-key:\n    allow: [authentication]\n"
        "    min_config_svn: {int}\n    relax: {{verify_mr_signer: {str}}}\n",
        parse_manifest,
        ManifestFormatError,
        "secrets.token-key.min_config_svn",
        None,
        "secrets.token-key.relax.verify_mr_signer",
        "a reason",
    ),
}


def refusal(kind: str, document: bytes) -> InputError:
    strict = FILES[kind]
    with pytest.raises(strict.error) as caught:
        strict.parse(document)
    return caught.value


@pytest.mark.parametrize("kind", FILES)
def test_every_kind_parses_its_valid_document(kind: str) -> None:
    assert FILES[kind].parse(FILES[kind].document()) is not None


# slot -> the refusal's opening words, and the spellings that get a "write ..." advice
TYPED_SLOTS = {
    "int_": ("is not a decimal integer", INTEGER_SPELLINGS),
    "bool_": ("is not true or false", BOOLEAN_SPELLINGS),
}


@pytest.mark.parametrize(
    ("kind", "slot"),
    [
        (kind, slot)
        for kind, strict in FILES.items()
        for slot, field in (("int_", strict.int_field), ("bool_", strict.bool_field))
        if field
    ],
)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_integer_or_boolean_field_takes_its_one_spelling_only(
    kind: str, slot: str, spelling: str
) -> None:
    strict = FILES[kind]
    words, advised = TYPED_SLOTS[slot]
    readings, advice = SPELLINGS[spelling]
    error = refusal(kind, strict.document(**{slot: spelling}))
    assert error.field == (strict.int_field if slot == "int_" else strict.bool_field)
    expected = f"{spelling} {words} ({readings})"
    if spelling in advised:
        expected += f"; {advice}"
    assert strict.problem(error) == expected


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_string_field_takes_such_a_spelling_only_quoted(kind: str, spelling: str) -> None:
    strict = FILES[kind]
    readings, _advice = SPELLINGS[spelling]
    error = refusal(kind, strict.document(str_=spelling))
    if kind == "manifest":
        # A mapping key: the service name itself.
        assert error.field == f"enclaves.{spelling}"
        assert (
            strict.problem(error)
            == f"this key is not a plain string ({readings}); put it in quotes"
        )
    elif strict.echoes_values:
        assert error.field == strict.str_field
        assert strict.problem(error) == (
            f"expected a string, got {spelling} ({readings}); put it in quotes"
        )
    else:
        assert error.field == strict.str_field
        assert strict.problem(error) == "expected a string"  # the value is never repeated
    if kind in ("runtime.yaml", "secrets file"):  # free text; the others are names
        assert strict.parse(strict.document(str_=f"'{spelling}'")) is not None


@pytest.mark.parametrize("kind", [kind for kind, f in FILES.items() if f.int_field])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("'010'", "expected an integer, got str '010'"),  # quoted: a string, as always
        (".inf", "expected an integer, got float inf"),
        ("~", "expected an integer, got null None"),
        ("true", "expected an integer, got bool True"),
    ],
)
def test_other_non_integers_in_an_integer_field(kind: str, value: str, problem: str) -> None:
    strict = FILES[kind]
    error = refusal(kind, strict.document(int_=value))
    assert error.field == strict.int_field
    assert strict.problem(error) == (
        problem if strict.echoes_values else problem.split(", got ", maxsplit=1)[0]
    )


@pytest.mark.parametrize("kind", [kind for kind, f in FILES.items() if f.bool_field])
def test_a_quoted_boolean_is_a_string(kind: str) -> None:
    strict = FILES[kind]
    error = refusal(kind, strict.document(bool_="'true'"))
    assert error.field == strict.bool_field
    assert strict.problem(error) == "expected true or false, got str 'true'"


@given(number=st.integers(-(10**30), 10**30))
def test_decimal_integers_round_trip(number: int) -> None:
    assert load_yaml_mapping(f"v: {number}\n", "test") == {"v": number}
    assert load_yaml_mapping(dump_yaml({"v": number}).decode(), "test") == {"v": number}


@given(
    text=st.one_of(
        st.text(),
        st.sampled_from(list(SPELLINGS)),
        st.from_regex(r"[-+0-9._:xobeE]{1,8}", fullmatch=True),
    )
)
def test_dumped_strings_read_back_as_the_same_strings(text: str) -> None:
    """What dump_yaml writes (the kms secrets file, manifests, trust files) the loader reads
    back unchanged: a string the loader would not read as a string is written quoted."""
    assert load_yaml_mapping(dump_yaml({"s": text}).decode(), "test") == {"s": text}


@given(
    text=st.one_of(
        st.from_regex(r"[-+._:0-9a-fA-FxoOeEyYnNtTrRuUlLsSiI]{1,10}", fullmatch=True),
        st.from_regex(r"[-+.]?[0-9][0-9a-fA-FxoeE._:+-]{0,8}", fullmatch=True),
    )
)
@example(text="0999")  # YAML 1.2 only: an integer
@example(text="0o17")
@example(text="1e5")
@example(text=".5e3")
@example(text="y")  # the YAML 1.1 type list only: a boolean
@example(text="N")
def test_a_plain_scalar_is_unsettled_exactly_when_a_yaml_version_reads_it_otherwise(
    text: str,
) -> None:
    """PyYAML (YAML 1.1) is the reference: what it reads as a float, timestamp or null stays
    so; anything else it or YAML 1.2 reads as a number or boolean, unless in the one
    spelling, is unsettled."""
    document = f"v: {text}\n"
    try:
        reference = yaml.safe_load(document)["v"]
        value = load_yaml_mapping(document, "test")["v"]
    except (yaml.YAMLError, InputError, TypeError):
        return  # not a plain scalar here (`1:`, `-`, ...)
    if isinstance(reference, float | dt.date) or reference is None:
        assert not isinstance(value, UnsettledScalar)
    else:
        assert isinstance(value, UnsettledScalar) == (unsettled(text) is not None)
        if not isinstance(value, UnsettledScalar):
            assert value == reference and type(value) is type(reference)


def test_an_unsettled_value_is_written_back_as_it_was_read() -> None:
    document = load_yaml_mapping("a: 010\nb: yes\n", "test")
    assert dump_yaml(document) == b"a: 010\nb: yes\n"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("v: !!int 010\n", "a value cannot be read: '010' tagged tag:yaml.org,2002:int (line 1)"),
        ("v: !!bool yes\n", "a value cannot be read: 'yes' tagged tag:yaml.org,2002:bool (line 1)"),
        ("base: &b {x: 1}\nv:\n  <<: *b\n", "merge keys (<<) are YAML 1.1 only"),
        ("v: &a [1, *a]\n", "an alias refers to a value that contains it (line 1)"),
        ("v: *nowhere\n", "alias *nowhere names no anchor (line 1)"),
        ("a: 1\n---\nb: 2\n", "more than one YAML document (line 2)"),
        ("&k [x]: 1\n", "mapping keys must be plain values (line 1)"),
        ("v: " + "[" * 70 + "]" * 70 + "\n", "nested more than 64 levels deep"),
        (
            "v: !!set {a: null}\n",
            "a value cannot be read: a collection tagged tag:yaml.org,2002:set (line 1)",
        ),
    ],
)
def test_yaml_forms_other_readers_read_otherwise_are_refused(document: str, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        load_yaml_mapping(document, "test")
    assert fragment in str(caught.value)


def test_explicit_tags_in_their_one_spelling_and_aliases_still_read() -> None:
    assert load_yaml_mapping("v: !!int 10\nb: !!bool false\ns: !!str 010\n", "test") == {
        "v": 10,
        "b": False,
        "s": "010",
    }
    shared = load_yaml_mapping("a: &x [1, 2]\nb: *x\nc: &n ~\nd: *n\n", "test")
    assert shared == {"a": [1, 2], "b": [1, 2], "c": None, "d": None}
    assert shared["a"] is shared["b"]  # the value it names, not a copy


def test_a_timestamp_is_read_alike_quoted_or_not() -> None:
    """YAML 1.1 reads an unquoted timestamp as one and YAML 1.2 as a string; the manifest's
    ``expires`` takes both and reads the same moment."""
    for spelling in ('"2030-01-01T00:00:00Z"', "2030-01-01T00:00:00Z"):
        document = (
            FILES["manifest"].document().replace(b'"2030-01-01T00:00:00Z"', spelling.encode())
        )
        manifest = parse_manifest(document)
        assert manifest.expires == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

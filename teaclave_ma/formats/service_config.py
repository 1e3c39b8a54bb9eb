"""``service.yaml``: the measured configuration of one service.

It lives in the service's source directory and is copied into the enclave image, so
everything here is part of MRENCLAVE: who may call the service (inbound), whom it calls
(outbound), its SGX enclave attributes and which TCB statuses it tolerates in peers.
Deployment details that must not change the measurement (addresses, paths) live in the
runtime config instead (``teaclave_ma.formats.runtime_config``).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from teaclave_ma.attestation.backends import GRAMINE_DEVICE, TSM_REPORTS
from teaclave_ma.attestation.policy import TCB_STATUSES, VerificationPolicy
from teaclave_ma.errors import InputError
from teaclave_ma.formats.limits import ServerLimits, parse_limits
from teaclave_ma.formats.strict import (
    expect_bool,
    expect_int,
    expect_keys,
    expect_list,
    expect_mapping,
    expect_str,
    join,
    parse_yaml_mapping,
)

SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
# In a kms's inbound list, the edge that admits its secret owners (``secrets.owner``), not a
# service: a service of that name could be taken for the owners, or they for it.
OWNERS_EDGE = "owners"


def service_name(value: object, path: str) -> str:
    """A service's name: SERVICE_NAME, and not the reserved owners edge."""
    name = expect_str(value, path, SERVICE_NAME)
    refuse_owners_edge(name, path)
    return name


def refuse_owners_edge(name: str, path: str) -> None:
    if name == OWNERS_EDGE:
        raise InputError(
            path,
            f"{OWNERS_EDGE!r} is reserved (in a kms's inbound list it admits the secret "
            "owners), so no service may be called that",
        )


ENTRYPOINT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*")
# What the entrypoint returns: a JSON-RPC ``Service`` (rpc), a WSGI or an ASGI application.
APP_KINDS = ("rpc", "wsgi", "asgi")
# Revoked is not listed: no configuration may accept a revoked platform.
_TCB_STATUS = re.compile("|".join(sorted(TCB_STATUSES - {"Revoked"})))


@attrs.frozen
class EnclaveConfig:
    """The SGX fields a real build carries (in Gramine: ``sgx.isvprodid`` and friends)."""

    isv_prod_id: int
    isv_svn: int
    config_svn: int = 0
    debug: bool = False


REAL_BACKENDS = ("gramine", "tsm")


@attrs.frozen
class BackendConfig:
    """Where this image may take its quotes (and, on Gramine, its sealing keys) from, in
    order of preference. Measured: a host that could point a service at a directory of its
    own making would hand it quotes and keys of its choosing. Simulated images ignore it:
    the build decides the simulation (``teaclave-ma build --simulated-platform``)."""

    backends: tuple[str, ...] = REAL_BACKENDS
    gramine_device: Path = GRAMINE_DEVICE
    tsm_root: Path = TSM_REPORTS


@attrs.frozen
class TcbConfig:
    """How this service judges its peers' quotes once they verify (measured)."""

    allow_status: tuple[str, ...] = ("UpToDate",)
    # None: whatever advisories the allowed statuses carry; else each must be listed.
    allow_advisories: tuple[str, ...] | None = None
    min_evaluation_data_number: int = 0

    def policy(self) -> VerificationPolicy:
        return VerificationPolicy(
            allowed_tcb_statuses=self.allow_status,
            min_tcb_evaluation_data_number=self.min_evaluation_data_number,
            allowed_advisories=self.allow_advisories,
        )


@attrs.frozen
class StateConfig:
    """Whom the service trusts with its state (measured): the sealing key's policy, and
    whether a backend without sealing keys (TDX) may keep the state unsealed."""

    seal_to: str = "mrsigner"  # or "mrenclave": only this exact build can read it
    unsealed_ok: bool = False


def parse_state_config(value: object, path: str = "state") -> StateConfig:
    mapping = expect_mapping(value, path)
    expect_keys(mapping, path, [], ["seal_to", "unsealed_ok"])
    return StateConfig(
        seal_to=expect_str(
            mapping.get("seal_to", "mrsigner"),
            join(path, "seal_to"),
            re.compile("mrsigner|mrenclave"),
        ),
        unsealed_ok=expect_bool(mapping.get("unsealed_ok", False), join(path, "unsealed_ok")),
    )


@attrs.frozen
class ProvisionedSecret:
    """A secret fetched from the kms at start: into a file of the provision directory, or
    into an environment variable of the application."""

    name: str
    file: str | None = None
    env: str | None = None


@attrs.frozen
class ServiceConfig:
    name: str
    entrypoint: str | None
    enclave: EnclaveConfig
    app: str = "rpc"  # one of APP_KINDS; measured, so the host cannot change how requests are read
    inbound: tuple[str, ...] = ()
    outbound: tuple[str, ...] = ()
    # ``{callers: any}`` in inbound: callers without a certificate are served too (as
    # unattested); one that presents a certificate must still pass the inbound check.
    unattested_callers: bool = False
    tcb: TcbConfig = TcbConfig()
    attestation: BackendConfig = BackendConfig()
    state: StateConfig = StateConfig()
    limits: ServerLimits = attrs.field(factory=ServerLimits)
    provision: tuple[ProvisionedSecret, ...] = ()
    run: RunConfig | None = None


def parse_enclave_config(value: object, path: str) -> EnclaveConfig:
    mapping = expect_mapping(value, path)
    expect_keys(mapping, path, ["isv_prod_id", "isv_svn"], ["config_svn", "debug"])
    return EnclaveConfig(
        isv_prod_id=expect_int(mapping["isv_prod_id"], join(path, "isv_prod_id"), 0, 0xFFFF),
        isv_svn=expect_int(mapping["isv_svn"], join(path, "isv_svn"), 0, 0xFFFF),
        config_svn=expect_int(mapping.get("config_svn", 0), join(path, "config_svn"), 0, 0xFFFF),
        debug=expect_bool(mapping.get("debug", False), join(path, "debug")),
    )


UNATTESTED_CALLERS = {"callers": "any"}


def _names(value: object, path: str, *, inbound: bool = False) -> tuple[str, ...]:
    """Service names; an inbound list may also hold the owners edge and ``{callers: any}``
    (left out of the names: ``_admits_unattested`` reads it)."""
    items = expect_list(value, path)
    names = tuple(
        expect_str(item, join(path, index), SERVICE_NAME)
        if inbound
        else service_name(item, join(path, index))
        for index, item in enumerate(items)
        if not (inbound and _is_open_entry(item, join(path, index)))
    )
    if len(set(names)) != len(names):
        raise_duplicate(names, path)
    return names


def _is_open_entry(item: object, path: str) -> bool:
    if not isinstance(item, dict):
        return False
    if item != UNATTESTED_CALLERS:
        raise InputError(path, f"expected a service name or {{callers: any}}, not {item!r}")
    return True


def _admits_unattested(value: object) -> bool:
    return isinstance(value, list) and UNATTESTED_CALLERS in value


def raise_duplicate(names: tuple[str, ...], path: str) -> None:
    duplicate = next(name for name in names if names.count(name) > 1)
    raise InputError(path, f"{duplicate!r} is listed twice")


_ADVISORY_ID = re.compile(r"INTEL-SA-[0-9]{5}")


def parse_tcb_config(value: object, path: str = "tcb") -> TcbConfig:
    mapping = expect_mapping(value, path)
    expect_keys(
        mapping, path, [], ["allow_status", "allow_advisories", "min_evaluation_data_number"]
    )
    where = join(path, "allow_status")
    statuses = tuple(
        expect_str(item, join(where, index), _TCB_STATUS)
        for index, item in enumerate(expect_list(mapping.get("allow_status", ["UpToDate"]), where))
    )
    advisories = None
    if "allow_advisories" in mapping:
        where = join(path, "allow_advisories")
        advisories = tuple(
            expect_str(item, join(where, index), _ADVISORY_ID)
            for index, item in enumerate(expect_list(mapping["allow_advisories"], where))
        )
    return TcbConfig(
        allow_status=statuses,
        allow_advisories=advisories,
        min_evaluation_data_number=expect_int(
            mapping.get("min_evaluation_data_number", 0),
            join(path, "min_evaluation_data_number"),
            0,
            1 << 31,
        ),
    )


def parse_backend_config(value: object, path: str = "attestation") -> BackendConfig:
    mapping = expect_mapping(value, path)
    expect_keys(mapping, path, [], ["backends", "gramine_device", "tsm_root"])
    where = join(path, "backends")
    backends = tuple(
        expect_str(item, join(where, index), re.compile("|".join(REAL_BACKENDS)))
        for index, item in enumerate(
            expect_list(mapping.get("backends", list(REAL_BACKENDS)), where)
        )
    )
    if not backends:
        raise InputError(where, "name at least one of " + ", ".join(REAL_BACKENDS))
    if len(set(backends)) != len(backends):
        raise_duplicate(backends, where)
    return BackendConfig(
        backends=backends,
        gramine_device=_absolute(mapping, path, "gramine_device", GRAMINE_DEVICE),
        tsm_root=_absolute(mapping, path, "tsm_root", TSM_REPORTS),
    )


def _absolute(mapping: dict[str, object], path: str, key: str, default: Path) -> Path:
    if key not in mapping:
        return default
    value = Path(expect_str(mapping[key], join(path, key)))
    if not value.is_absolute():
        # Relative to what? The working directory is the host's choice.
        raise InputError(join(path, key), f"must be an absolute path, got {str(value)!r}")
    return value


def parse_service_config(data: bytes, what: str = "service.yaml") -> ServiceConfig:
    mapping = parse_yaml_mapping(data, what)
    if "allow_tcb_status" in mapping:
        raise InputError("allow_tcb_status", "moved: write it as tcb.allow_status")
    expect_keys(
        mapping,
        "",
        ["name", "enclave"],
        [
            "entrypoint",
            "app",
            "inbound",
            "outbound",
            "tcb",
            "attestation",
            "state",
            "limits",
            "provision",
            "run",
        ],
    )
    return ServiceConfig(
        name=service_name(mapping["name"], "name"),
        entrypoint=(
            expect_str(mapping["entrypoint"], "entrypoint", ENTRYPOINT)
            if "entrypoint" in mapping
            else None
        ),
        enclave=parse_enclave_config(mapping["enclave"], "enclave"),
        app=_app_kind(mapping.get("app", "rpc")),
        inbound=_names(mapping.get("inbound", []), "inbound", inbound=True),
        unattested_callers=_admits_unattested(mapping.get("inbound", [])),
        outbound=_names(mapping.get("outbound", []), "outbound"),
        tcb=parse_tcb_config(mapping.get("tcb", {})),
        attestation=parse_backend_config(mapping.get("attestation", {})),
        state=parse_state_config(mapping.get("state", {})),
        limits=parse_limits(mapping.get("limits", {}), "limits"),
        provision=_provision(mapping.get("provision", {})),
        run=parse_run_config(mapping["run"]) if "run" in mapping else None,
    )


def _app_kind(value: object) -> str:
    kind = expect_str(value, "app")
    if kind not in APP_KINDS:
        raise InputError("app", f"expected one of {', '.join(APP_KINDS)}, got {kind!r}")
    return kind


_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_./-]{0,127}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def _provision(value: object) -> tuple[ProvisionedSecret, ...]:
    """``provision: {NAME: {file: FILE} | {env: VAR}}``: what ``teaclave-ma run`` fetches."""
    secrets = []
    for name, target in expect_mapping(value, "provision").items():
        where = join("provision", name)
        if not _SECRET_NAME.fullmatch(name):
            raise InputError(where, f"invalid secret name (expected {_SECRET_NAME.pattern})")
        spec = expect_mapping(target, where)
        expect_keys(spec, where, [], ["file", "env"])
        if len(spec) != 1:
            raise InputError(where, "give exactly one of file or env")
        if "file" in spec:
            secrets.append(
                ProvisionedSecret(
                    name, file=expect_str(spec["file"], join(where, "file"), _FILE_NAME)
                )
            )
        else:
            secrets.append(
                ProvisionedSecret(name, env=expect_str(spec["env"], join(where, "env"), _ENV_NAME))
            )
    return tuple(secrets)


# The host may hand a job only these variables (pass_env): they change how text and times
# are shown, never which code runs. LD_*, PYTHON*, PATH and the rest never pass.
PASS_ENV_ALLOWED = ("LANG", "LANGUAGE", "LC_*", "TERM", "TZ")
_PASS_ENV = re.compile(r"LANG|LANGUAGE|LC_[A-Z]+|TERM|TZ")
# Set by `teaclave-ma run` itself: a fixed PATH, and HOME is the job's private directory.
RUN_SETS = ("HOME", "PATH")
PYTHON = "python"  # in run.command[0]: the interpreter running teaclave-ma


@attrs.frozen
class RunConfig:
    """What ``teaclave-ma run`` starts. All of it is measured; the host adds nothing but
    the values of the ``pass_env`` variables it has."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    pass_env: tuple[str, ...] = ()


def parse_run_config(value: object) -> RunConfig:
    """``run: {command: [ARGV...], env: {VAR: VALUE}, pass_env: [VAR]}``."""
    run = expect_mapping(value, "run")
    expect_keys(run, "run", ["command"], ["env", "pass_env"])
    command = tuple(
        _argument(item, join("run.command", index))
        for index, item in enumerate(expect_list(run["command"], "run.command"))
    )
    if not command:
        raise InputError("run.command", "give the program and its arguments")
    _program(command[0])
    env = []
    for name, fixed in expect_mapping(run.get("env", {}), "run.env").items():
        where = join("run.env", name)
        _variable(name, where)
        env.append((name, _argument(fixed, where)))
    pass_env = tuple(
        _variable(expect_str(item, join("run.pass_env", index)), join("run.pass_env", index))
        for index, item in enumerate(expect_list(run.get("pass_env", []), "run.pass_env"))
    )
    for index, name in enumerate(pass_env):
        where = join("run.pass_env", index)
        if not _PASS_ENV.fullmatch(name):
            raise InputError(
                where,
                f"{name!r} may not come from the host: only {', '.join(PASS_ENV_ALLOWED)} "
                "can be passed through (give a fixed value in run.env instead)",
            )
        if name in dict(env) or name in pass_env[:index]:
            raise InputError(where, f"{name!r} is already set in run.env or run.pass_env")
    return RunConfig(command, tuple(env), pass_env)


def _argument(value: object, path: str) -> str:
    text = expect_str(value, path)
    if "\0" in text:
        raise InputError(path, "a NUL character cannot be passed to a program")
    return text


def _variable(name: str, path: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise InputError(path, f"invalid variable name (expected {_ENV_NAME.pattern})")
    if name in RUN_SETS:
        raise InputError(
            path, f"{name} is set by teaclave-ma run (PATH fixed, HOME the private directory)"
        )
    return name


def _program(program: str) -> None:
    """``python``, an absolute path, or a path inside the image; never a name looked up in
    the host's PATH."""
    parts = program.removeprefix("/").split("/")
    if program != PYTHON and any(part in ("", ".", "..") for part in parts):
        raise InputError(
            "run.command[0]",
            f"{program!r}: expected {PYTHON}, an absolute path or a path inside the image "
            "(no empty, . or .. parts)",
        )

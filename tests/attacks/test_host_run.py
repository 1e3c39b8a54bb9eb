"""Attack catalogue, the host against ``teaclave-ma run`` and ``teaclave-ma seal``.

The host starts ``run``: it chooses argv, the environment, the signals and the directories.
It must not choose what runs or what the job's environment holds, and it must find no
plaintext of a sealed file or a secret once the job is over, however the job ended. The
jobs here are variants of the example ``report`` service whose program (``probe.py``)
prints what it was given, as JSON on stdout: the environment it was started with (read
from /proc, so nothing Python adds itself), its directory and the modes of its files. It
also leaves copies of its plaintext behind, in a scratch file and in a read-only
subdirectory, as a careless job would.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import teaclave_ma.runtime.provision as provision_module
from teaclave_ma.cli.main import main
from teaclave_ma.errors import InputError
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.secrets.sealing import new_key, seal_source, sealing_secret_name
from teaclave_ma.testing.deployment import SimulatedDeployment
from tests.integration.conftest import SERVICES_DIR

CONFIG_PLAINTEXT = b"discount_rate: 0.125"  # a line of services/report/config.yaml, sealed
JOB_TOKEN = b"job-token-the-host-must-never-read"

PROBE = """\
import json, os, pathlib, signal, sys

here = pathlib.Path.cwd()
config = (here / "config.yaml").read_bytes()
(here / "scratch").write_bytes(config)  # the job's own copy of the plaintext
(here / "locked").mkdir()
(here / "locked" / "token").write_bytes(os.environ["JOB_TOKEN"].encode())
(here / "locked").chmod(0o500)  # a directory its owner cannot delete from as it is
initial = pathlib.Path("/proc/self/environ").read_bytes().split(b"\\0")
report = {
    "pid": os.getpid(),
    "argv": sys.argv[1:],
    "environ": dict(item.decode().split("=", 1) for item in initial if item),
    "cwd": str(here),
    "cwd_mode": here.stat().st_mode & 0o777,
    "modes": {name: (here / name).stat().st_mode & 0o777 for name in sorted(os.listdir(here))},
}


def stop(signum, _frame):
    os.write(1, json.dumps({"signal": signum}).encode())  # print may be mid-flush here
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


for forwarded in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(forwarded, stop)
print(json.dumps(report), flush=True)
if sys.argv[1] == "wait":
    while True:
        signal.pause()
sys.exit(int(sys.argv[1]))
"""

# One service, ``report``; each variant is another measurement of it in the manifest.
VARIANTS = {
    "exit0": "run: {command: [python, probe.py, '0'], env: {REPORT_FORMAT: text}, pass_env: [TZ]}",
    "exit3": "run: {command: [python, probe.py, '3']}",
    "wait": "run: {command: [python, probe.py, wait]}",
    "script": "run: {command: [bin/job.sh, ignored]}",  # a program of the image itself
}
JOB_SH = "#!/bin/sh\nexit 4\n"
PROVISION = "provision:\n  api-token: {file: api-token}\n  job-token: {env: JOB_TOKEN}\n"
# token-key is released to authentication only: the kms refuses it after the config was
# unsealed and api-token written.
REFUSED = "provision:\n  api-token: {file: api-token}\n  token-key: {file: token-key}\n"


def service_yaml(run: str, provision: str = PROVISION) -> str:
    return f"name: report\nenclave: {{isv_prod_id: 6, isv_svn: 1}}\noutbound: [kms]\n{provision}{run}\n"


DOCUMENTS = {variant: service_yaml(run) for variant, run in VARIANTS.items()}
DOCUMENTS["refused"] = service_yaml(VARIANTS["exit0"], REFUSED)


class Jobs:
    def __init__(self, deployment: SimulatedDeployment, kms: tuple[str, int], api_token: bytes):
        self.deployment = deployment
        self.kms = kms
        self.api_token = api_token

    def command(self, variant: str, name: str) -> list[str]:
        config = self.deployment.runtime_config(name, peers={"kms": self.kms}, provision=True)
        return [
            sys.executable, "-m", "teaclave_ma.cli.main", "run",
            str(self.deployment.images[f"report-{variant}"].root),
            "--manifest", str(self.deployment.manifest_path),
            "--signatures", str(self.deployment.signatures_dir),
            "--config", str(config), "--initialize-state",
        ]  # fmt: skip

    def parent(self, name: str) -> Path:
        """The provision_dir of the runtime config named ``name``."""
        return self.deployment.root / "run" / name / "provisioned"

    def plaintext_under(self, name: str) -> list[str]:
        """Files under the run directory of ``name`` holding any secret plaintext."""
        secrets = (CONFIG_PLAINTEXT, self.api_token, JOB_TOKEN)
        return [
            str(path)
            for path in sorted((self.deployment.root / "run" / name).rglob("*"))
            if path.is_file() and any(secret in path.read_bytes() for secret in secrets)
        ]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    deployment = SimulatedDeployment.create(tmp_path_factory.mktemp("host-run"), SERVICES_DIR)
    api_token = deployment.add_secret("api-token", ["report"]).reveal()
    deployment.add_secret("job-token", ["report"], SecretValue(JOB_TOKEN))
    deployment.add_secret("token-key", ["authentication"])
    key = new_key()  # one sealing key for every variant of report
    deployment.add_secret(sealing_secret_name("report"), ["report"], key)
    for variant, document in DOCUMENTS.items():

        def edit(source: Path, document: str = document) -> None:
            (source / "service.yaml").write_text(document)
            (source / "probe.py").write_text(PROBE)
            (source / "bin").mkdir()
            (source / "bin" / "job.sh").write_text(JOB_SH)

        source = deployment.variant_source("report", f"-{variant}", edit)
        sealed = deployment.root / "sealed" / f"report-{variant}"
        seal_source(source, ["config.yaml"], sealed, key)
        deployment.build("report", source=sealed, tag=f"-{variant}")
    kms_image = deployment.build("kms")
    reports = [image.identity for tag, image in deployment.images.items() if tag != "kms"]
    data = deployment.panel.manifest(
        {"kms": [kms_image.identity], "report": reports}, secrets=deployment.secret_rules
    )
    deployment.manifest_path.write_bytes(data)
    deployment.panel.write_signatures(deployment.signatures_dir, data, by=["alice", "bob"])
    config_path = deployment.runtime_config("kms")
    kms = ServiceRuntime(
        kms_image,
        parse_runtime_config(config_path.read_bytes(), config_path.parent),
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=True,
    )
    address = kms.start()
    deployment.provision_kms(address)
    yield Jobs(deployment, address, api_token)
    kms.stop()


HOSTILE_ENVIRONMENT = {
    "LD_PRELOAD": "/host/lib/inject.so",
    "LD_LIBRARY_PATH": "/host/lib",
    "PYTHONPATH": "/host/python",
    "PYTHONSTARTUP": "/host/python/startup.py",
    "HOST_ONLY": "not for the job",
    "LANG": "C.UTF-8",  # on the allow-list, but this job does not ask for it
    "TZ": "Europe/Paris",  # on the allow-list and in the job's pass_env
}


def host_environment() -> dict[str, str]:
    return {**os.environ, **HOSTILE_ENVIRONMENT}


def run(jobs: Jobs, variant: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jobs.command(variant, name),
        env=host_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def first_report(stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stdout.splitlines()[0])
    return report


def assert_nothing_left(jobs: Jobs, name: str, report: dict[str, Any] | None = None) -> None:
    if report is not None:
        assert Path(report["cwd"]).parent == jobs.parent(name)
        assert not Path(report["cwd"]).exists()
    assert sorted(jobs.parent(name).iterdir()) == []
    assert jobs.plaintext_under(name) == []


def test_a_command_after_double_dash_is_refused(
    jobs: Jobs, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "dash-command"
    argv = [*jobs.command("exit0", name)[3:], "--", "/bin/sh", "-c", "cat api-token"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "teaclave-ma run takes no command" in error
    assert "run.command in the image's measured service.yaml" in error
    assert "refused: /bin/sh -c cat api-token" in error
    assert not jobs.parent(name).exists()  # refused before anything was attested or written


def test_the_job_gets_only_its_measured_command_and_environment(jobs: Jobs) -> None:
    name = "hostile-environment"
    result = run(jobs, "exit0", name)
    assert result.returncode == 0, result.stderr
    report = first_report(result.stdout)
    assert report["argv"] == ["0"]  # python probe.py 0, as service.yaml says
    assert report["environ"] == {
        "PATH": "/usr/bin:/bin",
        "HOME": report["cwd"],
        "REPORT_FORMAT": "text",  # run.env
        "TZ": "Europe/Paris",  # run.pass_env
        "JOB_TOKEN": JOB_TOKEN.decode(),  # provision: job-token: {env: JOB_TOKEN}
    }
    assert report["cwd_mode"] == 0o700
    assert report["modes"] == {
        "api-token": 0o600,
        "attestation.json": 0o600,
        "bin": 0o700,
        "config.yaml": 0o600,  # unsealed; config.yaml.sealed is not laid out
        "enclave.json": 0o600,
        "locked": 0o500,
        "probe.py": 0o600,
        "report.py": 0o600,
        "scratch": 0o600,  # the job's umask is 077
        "service.yaml": 0o600,
        "trust.yaml": 0o600,
    }
    assert_nothing_left(jobs, name, report)


def test_a_failing_job_leaves_nothing_and_its_status_is_returned(jobs: Jobs) -> None:
    name = "failing-job"
    result = run(jobs, "exit3", name)
    assert result.returncode == 3, result.stderr
    assert_nothing_left(jobs, name, first_report(result.stdout))


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda signum: signum.name
)
def test_a_signal_to_run_is_forwarded_and_the_directory_removed(
    jobs: Jobs, signum: signal.Signals
) -> None:
    name = f"signalled-{signum.name}"
    launcher = subprocess.Popen(
        jobs.command("wait", name),
        env=host_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        ready, _, _ = select.select([launcher.stdout], [], [], 120)
        assert ready, "the job never reported"
        report = json.loads(launcher.stdout.readline())
        launcher.send_signal(signum)  # to run, not to the job: run must pass it on
        stdout, stderr = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode == 128 + signum, stderr
    assert json.loads(stdout) == {"signal": signum}  # the job got it, and died of it
    with pytest.raises(ProcessLookupError):
        os.kill(report["pid"], 0)
    assert_nothing_left(jobs, name, report)


def test_a_program_of_the_image_runs_from_the_private_directory(jobs: Jobs) -> None:
    name = "image-program"
    result = run(jobs, "script", name)
    assert result.returncode == 4, result.stderr  # bin/job.sh was laid out executable
    assert "starting bin/job.sh ignored" in result.stderr
    assert_nothing_left(jobs, name)


def test_a_program_missing_from_the_image_is_refused_before_attestation(
    jobs: Jobs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare name is a path inside the image, never looked up in the host's PATH."""
    document = service_yaml("run: {command: [sh, -c, 'cat api-token']}")
    source = jobs.deployment.variant_source(
        "report", "-bare-name", lambda source: (source / "service.yaml").write_text(document)
    )
    image = jobs.deployment.build("report", source=source, tag="-bare-name")
    name = "bare-name"
    argv = jobs.command("exit0", name)[3:]
    argv[1] = str(image.root)
    assert main(argv) == 2
    assert "run.command[0]: 'sh' is not a file of the image" in capsys.readouterr().err
    assert not jobs.parent(name).exists()


def run_in_process(jobs: Jobs, name: str, then: Callable[[], None]) -> tuple[int, Path]:
    """``run_job`` of report-exit0 in this process, its provisioning replaced by writing
    the sealed config's plaintext and then ``then()``; its status and its directory."""
    config = jobs.deployment.runtime_config(name, peers={"kms": jobs.kms}, provision=True)
    written: list[Path] = []

    def provision_then(node: object, directory: Path) -> dict[str, str]:
        (directory / "config.yaml").write_bytes(CONFIG_PLAINTEXT)
        written.append(directory)
        then()
        return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provision_module, "provision", provision_then)
        status = provision_module.run_job(
            jobs.deployment.images["report-exit0"],
            parse_runtime_config(config.read_bytes(), config.parent),
            jobs.deployment.manifest_path,
            jobs.deployment.signatures_dir,
            {},
            initialize_state=True,
        )
    return status, written[0]


def test_a_signal_before_the_job_starts_abandons_it_and_removes_the_directory(
    jobs: Jobs,
) -> None:
    """The host's SIGTERM arrives mid-provisioning, after a plaintext file was written."""

    def signal_run() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the signal did not stop the provisioning")

    handler = signal.getsignal(signal.SIGTERM)
    status, directory = run_in_process(jobs, "signalled-while-provisioning", signal_run)
    assert status == 128 + signal.SIGTERM
    assert not directory.exists()
    assert_nothing_left(jobs, "signalled-while-provisioning")
    assert signal.getsignal(signal.SIGTERM) is handler  # the launcher's handlers are gone


def test_a_signal_during_the_removal_does_not_cut_it_short(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provisioning fails after writing plaintext; the host signals run while it removes
    the directory. The removal completes and the original error is what run reports."""
    real_rmtree = shutil.rmtree

    def signal_then_rmtree(path: Path) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        real_rmtree(path)

    def fail() -> None:
        raise InputError("provision", "failed on purpose")

    monkeypatch.setattr(provision_module.shutil, "rmtree", signal_then_rmtree)
    with pytest.raises(InputError, match="failed on purpose"):
        run_in_process(jobs, "signalled-while-removing", fail)
    assert_nothing_left(jobs, "signalled-while-removing")


def test_a_directory_the_job_locked_is_still_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root (as these tests run) deletes from read-only directories; the job's own user
    cannot, so the removal emulates that and the launcher must take the directories back."""
    real_rmtree = shutil.rmtree

    def rmtree_as_the_owner(path: Path) -> None:
        for current, _subdirectories, _files in os.walk(path):
            if os.stat(current).st_mode & 0o700 != 0o700:
                raise PermissionError(13, "Permission denied", current)
        real_rmtree(path)

    monkeypatch.setattr(provision_module.shutil, "rmtree", rmtree_as_the_owner)
    with provision_module.private_directory(tmp_path / "provisioned", "report") as directory:
        (directory / "read-only" / "closed").mkdir(parents=True)
        (directory / "read-only" / "closed" / "copy").write_bytes(JOB_TOKEN)
        (directory / "read-only" / "closed").chmod(0o000)
        (directory / "read-only").chmod(0o500)
    assert not directory.exists()
    assert sorted((tmp_path / "provisioned").iterdir()) == []


def test_a_failure_during_provisioning_leaves_no_plaintext(jobs: Jobs) -> None:
    """The config is unsealed and api-token written before the kms refuses token-key."""
    name = "refused-mid-provisioning"
    result = run(jobs, "refused", name)
    assert result.returncode == 1
    assert "kms refused: secret 'token-key' is not released to service 'report'" in result.stderr
    assert result.stdout == ""  # the job never started
    assert_nothing_left(jobs, name)


def test_an_image_without_a_run_section_is_refused_before_attestation(
    jobs: Jobs, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "no-run-section"
    argv = jobs.command("exit0", name)[3:]
    argv[1] = str(jobs.deployment.images["kms"].root)
    assert main(argv) == 2
    assert "run: service.yaml has no run section" in capsys.readouterr().err
    assert not jobs.parent(name).exists()


@pytest.mark.parametrize("variable", ["LD_PRELOAD", "PYTHONPATH", "LD_AUDIT", "PYTHONHOME"])
def test_a_service_yaml_passing_a_code_loading_variable_is_refused(variable: str) -> None:
    text = service_yaml(f"run: {{command: [python, probe.py], pass_env: [TZ, {variable}]}}")
    with pytest.raises(InputError) as caught:
        parse_service_config(text.encode())
    assert caught.value.field == "run.pass_env[1]"
    assert f"{variable!r} may not come from the host" in caught.value.problem
    assert "LANG, LANGUAGE, LC_*, TERM, TZ" in caught.value.problem


def test_a_service_yaml_passing_ld_preload_is_refused_by_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "report"
    shutil.copytree(SERVICES_DIR / "report", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "service.yaml").write_text(
        service_yaml("run: {command: [python, report.py], pass_env: [LD_PRELOAD]}")
    )
    code = main(
        [
            "build", str(source), "--trust", str(tmp_path / "unused-trust.yaml"),
            "--signing-key", str(tmp_path / "unused.key.pem"), "--out", str(tmp_path / "image"),
        ]
    )  # fmt: skip
    assert code == 2
    assert "run.pass_env[0]: 'LD_PRELOAD' may not come from the host" in capsys.readouterr().err
    assert not (tmp_path / "image").exists()


def plant(kind: str, path: Path, target: Path) -> None:
    if kind == "link":
        path.symlink_to(target)
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("planted", ["assets/logo.png", "service.yaml"])
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("link", "symbolic links are not allowed in an enclave image"),
        ("fifo", "only regular files can be part of an enclave image"),
    ],
    ids=["link", "fifo"],
)
def test_seal_refuses_a_planted_link_or_fifo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], planted: str, kind: str, message: str
) -> None:
    """A link to the author's signing key, planted in the source, would have been copied
    (its target's bytes, in plaintext) into the shipped image; a FIFO as service.yaml
    would have hung seal on reading it."""
    author_key = tmp_path / "author.key.pem"
    author_key.write_bytes(b"-----BEGIN PRIVATE KEY----- the author's signing key\n")
    source = tmp_path / "report"
    shutil.copytree(SERVICES_DIR / "report", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "assets").mkdir()
    (source / planted).unlink(missing_ok=True)
    plant(kind, source / planted, author_key)
    out, missing = tmp_path / "sealed", tmp_path / "missing"
    code = main(
        [
            "seal", str(source), "--file", "config.yaml", "--out", str(out),
            "--kms", "127.0.0.1:9", "--owner-key", str(missing), "--manifest", str(missing),
            "--signatures", str(missing), "--trust", str(missing),
            "--simulated-platform", str(missing),
        ]
    )  # fmt: skip
    assert code == 2
    assert f"error: {planted}: {message}" in capsys.readouterr().err
    assert not out.exists()  # refused before the kms (here, none) is contacted

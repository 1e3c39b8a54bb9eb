"""``python -m fuzzing quote|certificate|all [--runs N] [--seconds S] [--workdir DIR]``

Runs a target under atheris (libFuzzer), seeded from ``fuzzing.targets``. The library's own
errors are expected refusals; any other exception stops the run, and libFuzzer writes the
input that caused it to ``WORKDIR/TARGET/crash-*`` and prints the traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

NAMES = ("quote", "certificate")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fuzzing", description=__doc__)
    parser.add_argument("target", choices=(*NAMES, "all"))
    parser.add_argument("--runs", type=int, default=-1, help="inputs to run (default: no limit)")
    parser.add_argument("--seconds", type=int, default=0, help="time limit (default: none)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "teaclave-ma-fuzz",
        help="corpus and crash inputs go to WORKDIR/TARGET (kept between runs)",
    )
    return parser.parse_args(argv)


def _fuzz(name: str, args: argparse.Namespace) -> None:
    import atheris  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - optional extra

    # Only the library is instrumented: its branches are what the fuzzer should explore.
    with atheris.instrument_imports(include=["teaclave_ma"]):
        from fuzzing import targets  # noqa: PLC0415 - imported under instrumentation

    logging.getLogger("teaclave_ma").setLevel(logging.ERROR)  # the simulated-platform warning
    targets.platform_dir = args.workdir / "simulated-platform"
    target, seeds = targets.TARGETS[name]
    corpus = args.workdir / name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds().values():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # noqa: S324 - a file name
    libfuzzer = [
        sys.argv[0],
        str(corpus),
        f"-runs={args.runs}",
        f"-max_total_time={args.seconds}",
        f"-artifact_prefix={args.workdir / name}/",
        "-max_len=65536",
        "-print_final_stats=1",
    ]
    print(f"fuzzing {name}: corpus {corpus}", flush=True)
    atheris.Setup(libfuzzer, target)
    atheris.Fuzz()  # exits the process


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    if args.target != "all":
        _fuzz(args.target, args)
        return 0
    # atheris.Fuzz() never returns, so each target runs in a process of its own.
    status = 0
    for name in NAMES:
        command = [sys.executable, "-m", "fuzzing", name, f"--runs={args.runs}"]
        command += [f"--seconds={args.seconds}", f"--workdir={args.workdir}"]
        status = status or subprocess.call(command)
    return status


if __name__ == "__main__":
    sys.exit(main())

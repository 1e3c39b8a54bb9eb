"""deploy/docker's Dockerfiles, linted by parsing (CI builds neither)."""

from __future__ import annotations

import pytest

from tests.conftest import PROJECT_ROOT

from .dockerfile_lint import instructions, problems, stages

DOCKER = PROJECT_ROOT / "deploy" / "docker"

GOOD = """\
FROM python:3.12.8-slim-bookworm AS build
RUN apt-get install -y gcc \\
    && pip install .
FROM python:3.12.8-slim-bookworm
COPY --from=build /opt /opt
USER 10001:10001
HEALTHCHECK CMD ["true"]
"""


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gramine"])
def test_the_dockerfiles_follow_the_rules(name: str) -> None:
    assert problems((DOCKER / name).read_text()) == []


def test_the_simulated_image_is_slim_python_and_the_gramine_one_gramines() -> None:
    simulated = stages((DOCKER / "Dockerfile").read_text())
    gramine = stages((DOCKER / "Dockerfile.gramine").read_text())
    assert (
        simulated[-1][0].arguments.startswith("python:") and "-slim" in simulated[-1][0].arguments
    )
    assert gramine[-1][0].arguments.startswith("gramineproject/gramine:")
    # The author's key reaches the build as a secret mount, never a layer.
    text = (DOCKER / "Dockerfile.gramine").read_text()
    assert "--mount=type=secret,id=author_key" in text
    assert not any(
        i.keyword in ("COPY", "ADD") and ".pem" in i.arguments for i in instructions(text)
    )


def test_a_good_example_passes() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda t: t.replace("python:3.12.8-slim-bookworm AS", "python AS"),
            "FROM python: not pinned by a tag",
        ),
        (
            lambda t: t.replace("FROM python:3.12.8-slim-bookworm\n", "FROM python:latest\n"),
            "FROM python:latest: not pinned",
        ),
        (lambda t: t.replace("USER 10001:10001", "USER root"), "the final stage runs as root"),
        (lambda t: t.replace("USER 10001:10001\n", ""), "the final stage has no USER"),
        (
            lambda t: t + "RUN apt-get install -y build-essential\n",
            "installs or runs build-essential",
        ),
        (
            lambda t: t + "RUN apt-get update && \\\n    apt-get install -y gcc\n",
            "installs or runs gcc",
        ),
        (lambda t: t.replace('HEALTHCHECK CMD ["true"]\n', ""), "no HEALTHCHECK"),
        (lambda t: t[t.index("FROM python:3.12.8-slim-bookworm\n") :], "not multi-stage"),
    ],
)
def test_each_rule_catches_its_breach(edit: object, problem: str) -> None:
    assert callable(edit)
    found = problems(edit(GOOD))
    assert any(problem in issue for issue in found), found


def test_a_gcc_in_the_build_stage_is_fine_and_a_word_containing_it_is_not_gcc() -> None:
    assert (
        problems(
            GOOD.replace('HEALTHCHECK CMD ["true"]', 'HEALTHCHECK CMD ["true"]\nRUN echo libgcc-s1')
        )
        == []
    )

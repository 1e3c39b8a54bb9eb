"""A small Dockerfile reader and the rules deploy/docker's files must follow."""

from __future__ import annotations

import re

import attrs

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cmake")


@attrs.frozen
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return result


def stages(text: str) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def problems(text: str) -> list[str]:
    """What is wrong with the Dockerfile ``text`` (empty: nothing)."""
    found = stages(text)
    if len(found) < 2:
        return ["not multi-stage: the final stage must not be the build stage"]
    issues: list[str] = []
    for stage in found:
        image = stage[0].arguments.split()[0]
        tag = image.rpartition(":")[2] if ":" in image.split("/")[-1] else ""
        if "@sha256:" not in image and (not tag or tag == "latest"):
            issues.append(f"FROM {image}: not pinned by a tag")
    final = found[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    if not users:
        issues.append("the final stage has no USER: it runs as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        issues.append(f"the final stage runs as {users[-1]}")
    for instruction in final:
        if instruction.keyword != "RUN":
            continue
        for tool in BUILD_TOOLS:
            if re.search(rf"(?<![\w.-]){re.escape(tool)}(?![\w.-])", instruction.arguments):
                issues.append(f"the final stage installs or runs {tool}")
    if not any(i.keyword == "HEALTHCHECK" for i in final):
        issues.append("the final stage has no HEALTHCHECK")
    return issues

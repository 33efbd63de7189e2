"""Finding agents and environments by the names people give them (an id works too)."""

from __future__ import annotations

from typing import Any

import anthropic

from corral.cli.failure import Failure


def find_agent(client: anthropic.Anthropic, name: str) -> Any | None:
    """The workspace's unarchived agent called ``name`` (or with that id); ``None`` if there is none."""
    if name.startswith("agent_"):
        return client.beta.agents.retrieve(name)
    found = [agent for agent in client.beta.agents.list(limit=100) if agent.name == name]
    if len(found) > 1:
        ids = ", ".join(agent.id for agent in found)
        raise Failure(f"{len(found)} agents are named {name!r} ({ids}): name one by its id")
    return found[0] if found else None


def agent_named(client: anthropic.Anthropic, name: str) -> Any:
    agent = find_agent(client, name)
    if agent is None:
        raise Failure(f"no agent named {name!r}: create it with `corral agents apply -f agent.yaml`")
    return agent


def find_environment(client: anthropic.Anthropic, name: str) -> Any | None:
    """The workspace's unarchived environment called ``name`` (or with that id)."""
    if name.startswith("env_"):
        return client.beta.environments.retrieve(name)
    found = [env for env in client.beta.environments.list(limit=100) if env.name == name]
    return found[0] if found else None  # environment names are unique in a workspace


def environment_named(client: anthropic.Anthropic, name: str) -> Any:
    environment = find_environment(client, name)
    if environment is None:
        raise Failure(f"no environment named {name!r}: create it with `corral environments apply -f env.yaml`")
    return environment

"""Environment updates: the typed errors the SDK knows, and the environment kinds not built yet."""

from __future__ import annotations

import pytest

from corral.contracts.api.environments import Environment, EnvironmentCreateParams, EnvironmentUpdateParams
from corral.contracts.api.errors import ApiError
from corral.session_store.domain.environments import create_environment, update_environment

NOW = "2026-01-01T00:00:00.000000Z"


def make(**params: object) -> Environment:
    return create_environment(
        EnvironmentCreateParams.model_validate({"name": "e", **params}), environment_id="env_1", now=NOW
    )


def update(env: Environment, params: dict[str, object]) -> Environment | None:
    return update_environment(env, EnvironmentUpdateParams.model_validate(params), sent=set(params), now=NOW)


def test_a_self_hosted_environment_is_refused_saying_it_is_not_supported_yet() -> None:
    with pytest.raises(ApiError) as err:
        make(config={"type": "self_hosted"})
    assert (err.value.status, err.value.error_code) == (400, "feature_not_supported")
    assert err.value.message.startswith("config.type: self_hosted") and "not supported yet" in err.value.message


def test_changing_the_config_type_is_invalid_config_type_change() -> None:
    with pytest.raises(ApiError) as err:
        update(make(), {"config": {"type": "self_hosted"}})
    assert (err.value.status, err.value.error_code) == (400, "invalid_config_type_change")
    assert "'cloud'" in err.value.message and "'self_hosted'" in err.value.message


def test_the_same_config_type_updates_as_before() -> None:
    updated = update(make(), {"config": {"type": "cloud", "networking": {"type": "limited"}}})
    assert updated is not None and updated.config["networking"]["type"] == "limited"


def test_updating_an_archived_environment_is_a_400_environment_archived() -> None:
    archived = make().model_copy(update={"archived_at": NOW})
    with pytest.raises(ApiError) as err:
        update(archived, {"name": "new"})
    assert (err.value.status, err.value.error_type, err.value.error_code) == (
        400,
        "invalid_request_error",
        "environment_archived",
    )

from __future__ import annotations

import pytest

from corral.contracts.api.errors import ApiError
from corral.session_store.domain import cursors


def test_a_cursor_round_trips_its_key_and_direction() -> None:
    token = cursors.encode("asc", [42], direction="prev")
    assert cursors.decode(token, order="asc") == ([42], "prev")


def test_a_cursor_made_for_another_order_is_refused() -> None:
    with pytest.raises(ApiError) as err:
        cursors.decode(cursors.encode("asc", [1]), order="desc")
    assert err.value.status == 400 and "order" in err.value.message


@pytest.mark.parametrize("token", ["", "not-base64!", "e30", "eyJvIjoiYXNjIn0"])
def test_garbage_is_a_400_not_a_500(token: str) -> None:
    with pytest.raises(ApiError) as err:
        cursors.decode(token, order="asc")
    assert err.value.status == 400

"""The XOAUTH2 initial response: Microsoft's format, byte for byte."""

from shared.transports.xoauth2 import initial_response


def test_initial_response_is_user_then_bearer_token_with_ctrl_a_separators() -> None:
    assert initial_response("a@contoso.example", "t0k") == "user=a@contoso.example\x01auth=Bearer t0k\x01\x01"

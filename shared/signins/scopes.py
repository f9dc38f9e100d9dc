"""What a user is asked to consent to, per transport (docs/delegated.md, "Scopes").

Graph scopes are requested by their short names because that is how Entra echoes them in the token
response's ``scope``, and MSAL files a token under that echo and matches it exactly
(delegated-auth-notes.md §4). The SMTP scope is the full Outlook URI (exo-docs: "https://outlook.
office.com/SMTP.Send"). One token is for one resource (AADSTS28000): never mix the two lists.
"""

from __future__ import annotations

from typing import Literal

Resource = Literal["graph", "smtp"]
RESOURCES: tuple[Resource, ...] = ("graph", "smtp")


def graph_scopes(*, shared: bool) -> list[str]:
    # Mail.ReadBasic: the Sent Items lookup after an ambiguous send (without it the lookup cannot know).
    scopes = ["Mail.Send", "Mail.ReadBasic"]
    if shared:
        scopes.append("Mail.Send.Shared")
    return scopes


def smtp_scopes(outlook_resource: str) -> list[str]:
    return [f"{outlook_resource.rstrip('/')}/SMTP.Send"]


def scopes_for(resource: Resource, *, shared: bool, outlook_resource: str) -> list[str]:
    return graph_scopes(shared=shared) if resource == "graph" else smtp_scopes(outlook_resource)


def short(scope: str) -> str:
    """``https://outlook.office.com/SMTP.Send`` -> ``SMTP.Send``: how ``scp`` in a token names it."""
    return scope.rsplit("/", 1)[-1]

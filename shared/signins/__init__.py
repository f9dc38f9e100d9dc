"""Delegated sending: a user's sign-in for a mailbox, kept alive for months.

``records`` is what one stored sign-in holds (plain metadata + the sealed MSAL token cache),
``sealing`` the pure AES-GCM encoder, ``store`` the blob container with ETag-guarded writes, ``key``
the Key Vault secret the sealing key lives in, ``scopes`` what each transport asks a user for, and
``tokens`` the per-process token source the transports call. docs/delegated.md tells the story.
"""

"""Transports move a rendered message to Microsoft 365: Graph ``sendMail`` or SMTP ``AUTH XOAUTH2``.

Both implement :class:`shared.transports.base.Transport`; ``shared.senders.Senders`` builds them once
per process. Importing this package stays cheap: each transport module is imported on first use.
"""

from shared.transports.base import BlobSource, SendResult, Transport

__all__ = ["BlobSource", "SendResult", "Transport"]

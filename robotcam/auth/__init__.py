"""Access control: who is asking (session cookie, bearer token, or nobody) and what they may do.

One layer at the edge decides the identity of every request (auth/http.py); handlers and peer
extensions only ask `identity.allows(permission)`. The same identity is attached to each viewer's
peer session, so the talk line and the control channel check what the HTTP side decided.
"""

from robotcam.auth.access import AccessControl
from robotcam.auth.identity import OPEN, Identity

__all__ = ["AccessControl", "Identity", "OPEN"]

"""rolegate: an identity-aware reverse proxy.

Staff sign in with company SSO, directory groups become scoped custom roles, and
every request to a backend route is allowed, denied or logged by that mapping.
"""

__version__ = "0.1.0"

"""rolegate.authz"""

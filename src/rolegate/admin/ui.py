"""Placeholder, replaced below."""
def add_ui_routes(reserved, holder):
    pass

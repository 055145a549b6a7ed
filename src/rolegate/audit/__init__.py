"""rolegate.audit"""

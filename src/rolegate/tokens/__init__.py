"""rolegate.tokens"""

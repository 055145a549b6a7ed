"""rolegate.identity"""

"""rolegate.proxy"""

"""rolegate.server"""

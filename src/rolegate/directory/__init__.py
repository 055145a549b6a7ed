"""rolegate.directory"""

"""rolegate.admin"""

"""Configuration: one YAML file parsed once into typed, immutable objects."""

from rolegate.config.loader import SourceMap, load_config, load_config_text
from rolegate.config.schema import Config

__all__ = ["Config", "SourceMap", "load_config", "load_config_text"]

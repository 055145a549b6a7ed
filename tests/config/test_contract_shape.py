"""The config file as ops teams write it (shared/config-shape.yaml, part of the contract) is accepted."""

from __future__ import annotations

from pathlib import Path

import yaml

from rolegate.config import load_config_text
from rolegate.server.runtime import Compiled

SHAPE = Path(__file__).resolve().parents[2].parent / "shared" / "config-shape.yaml"


def test_config_shape_is_accepted(tmp_path):
    text = SHAPE.read_text()
    (tmp_path / "session").write_text("s" * 48)
    text = text.replace("${file:/run/secrets/rolegate-session}", "${file:" + str(tmp_path / "session") + "}")
    doc = yaml.safe_load(text.replace("${", "$${"))  # parse only, to complete the elided permission list
    # The shape ends its catalogue with "# ... one entry per row of the seed matrix": add what it uses.
    used = {"tasks:order", "tasks:history", "invoices:view", "pricing:view"}
    extra = "".join(f"  - {p}\n" for p in sorted(used - set(doc["permissions"])))
    text = text.replace("  - sensors:manage\n", "  - sensors:manage\n" + extra, 1)
    config = load_config_text(text, file="config-shape.yaml", base_dir=tmp_path,
                              env={"ROLEGATE_OIDC_SECRET": "x", "LDAP_PASSWORD": "y"})
    assert config.server.workers == "auto" and config.directory.max_deletions == 0.1
    assert config.daypass.templates["subcontractor"].expires == "end_of_day"
    assert config.audit.reads.sample == 0.01
    Compiled(config)

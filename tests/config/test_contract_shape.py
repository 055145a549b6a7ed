"""The config file as ops teams write it (the contract's config-shape.yaml) is accepted, with its meaning.

The test reads the project's own copy, config/examples/reference.yaml (kept verbatim in step with the contract
but for its header): nothing in the project reads outside the repository at test time.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rolegate.authz import Identity, compile_policy, decide
from rolegate.config import load_config_text
from rolegate.server.runtime import Compiled

SHAPE = Path(__file__).resolve().parents[2] / "config" / "examples" / "reference.yaml"
HEADER_LINES = 4  # the vendored copy's header comment; the rest is the contract byte for byte


def load_shape(tmp_path):
    text = SHAPE.read_text()
    (tmp_path / "session").write_text("s" * 48)
    text = text.replace("${file:/run/secrets/rolegate-session}", "${file:" + str(tmp_path / "session") + "}")
    doc = yaml.safe_load(text.replace("${", "$${"))  # parse only, to complete the elided permission list
    # The shape ends its catalogue with "# ... one entry per row of the seed matrix": add what it uses.
    used = {"tasks:order", "tasks:history", "invoices:view", "pricing:view"}
    extra = "".join(f"  - {p}\n" for p in sorted(used - set(doc["permissions"])))
    text = text.replace("  - sensors:manage\n", "  - sensors:manage\n" + extra, 1)
    return load_config_text(
        text, file="config-shape.yaml", base_dir=tmp_path, env={"ROLEGATE_OIDC_SECRET": "x", "LDAP_PASSWORD": "y"}
    )


def test_the_vendored_copy_says_what_it_is():
    lines = SHAPE.read_text().splitlines()
    assert lines[0].startswith("# VERBATIM COPY of the contract file shared/config-shape.yaml")
    assert lines[HEADER_LINES].startswith("# The shape of a rolegate config file")


def test_config_shape_is_accepted(tmp_path):
    config = load_shape(tmp_path)
    assert config.server.workers == "auto" and config.directory.max_deletions == 0.1
    assert config.daypass.templates["subcontractor"].expires == "end_of_day"
    assert config.audit.reads.sample == 0.01
    Compiled(config)


def test_config_shape_means_what_it_says(tmp_path):
    """The revised keys are read, not ignored: if_setting, manages, users per scope, tasks inside buildings."""
    config = load_shape(tmp_path)
    user, responsible, admin = config.roles["user"], config.roles["responsible"], config.roles["admin"]
    assert user.if_setting["documents_add"] == ("documents:add",)
    assert responsible.manages.roles == ("responsible", "user") and responsible.manages.assigns == ("controls:perform",)
    assert admin.manages.roles == "all" and admin.manages.settings == "all" and admin.manages.assigns == "all"
    assert config.users["heidi"].settings == {"building:a": ("documents_view", "documents_add")}
    assert config.scopes["task"].parent == "building" and config.scopes["task"].members == {"42": "a", "77": "b"}

    policy = compile_policy(config)
    assert policy.scopes.chain("task:42") == ("task:42", "building:a", "client:acme")
    staff_heidi, bare_heidi = Identity("heidi", {"staff"}), Identity("heidi", ())
    # heidi's settings are on at building:a only, and count only with the role that lists them.
    assert decide(policy, staff_heidi, "documents:add", "building:a").allowed
    assert not decide(policy, staff_heidi, "documents:add", "building:b").allowed
    assert not decide(policy, staff_heidi, "documents:edit", "building:a").allowed
    assert not decide(policy, bare_heidi, "documents:add", "building:a").allowed, "a setting alone grants nothing"
    assert "any role at all" in policy.roles["admin"].manages.roles  # manages: {roles: all}
    assert policy.roles["responsible"].manages.settings == {
        "vacancy",
        "documents_view",
        "documents_add",
        "documents_edit",
    }

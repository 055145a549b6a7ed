"""A real Active Directory for the directory tests: a Samba AD DC, provisioned once, copied per test.

Provisioning a DC (``samba-tool domain provision``) costs 4 s on a quiet machine and over 30 s on a busy
one, so a session provisions one *template* into a temporary directory and seeds it offline
(``samba_seed.py``, run by the system python that carries Debian's samba bindings). Each test gets a
copy (``cp -a``, ~35 MB) with the paths and the interface in its smb.conf rewritten, and starts it
(1.5-4 s). A DC's LDAP ports are fixed (389, 636, 3268, 3269), so every copy listens on an address of
its own, ``127.0.0.N``; nothing listens on any other address.

TLS: Samba's self-made certificate names the host (``VM.acme.test``), not the address the tests
connect to, and rolegate always checks the name (as it must). So each copy gets a CA of its own and a
server certificate for ``127.0.0.N`` signed by it, in the place Samba reads them from
(``private/tls/``): ``dc.ca_file`` is that DC's CA, as a company's CA file would be for its DCs.

Samba is installed by ``scripts/setup.sh`` (packages samba, samba-dsdb-modules, samba-vfs-modules,
samba-ad-provision). Without it these tests fail with that hint; they are never skipped.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap3
from ldap3.utils.conv import escape_filter_chars
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rolegate_lab.errors import LabError
from rolegate_lab.process import LabProcess

SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's samba bindings live in the system python only
SEED_SCRIPT = Path(__file__).resolve().parent / "samba_seed.py"

REALM = "ACME.TEST"
DOMAIN = "ACME"
BASE_DN = "DC=acme,DC=test"
PEOPLE = f"OU=People,{BASE_DN}"
GROUPS = f"OU=Groups,{BASE_DN}"
ELSEWHERE = f"OU=Elsewhere,{BASE_DN}"  # outside the sync's bases: a user moved here leaves its scope
ADMIN_DN = f"CN=Administrator,CN=Users,{BASE_DN}"
ADMIN_PASSWORD = "Adm1n-Passw0rd!"
SERVICE = "rolegate"  # may read CN=Deleted Objects (List Contents + Read Property, granted by the seed)
SERVICE_PLAIN = "rolegate-plain"  # an ordinary account: deleted objects are invisible to it
SERVICE_PASSWORD = "Sync-Passw0rd!"

UAC_ENABLED = 544  # NORMAL_ACCOUNT | PASSWD_NOTREQD: enabled without a password
UAC_DISABLED = 546  # ... | ACCOUNTDISABLE
CREW = 2000  # members of "Field Crew": more than AD's default MaxValRange (1500)
SHOW_DELETED = "1.2.840.113556.1.4.417"
IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN

# Who is in the company: (name, display name, uac). Same names as the OpenLDAP lab where they overlap.
STAFF = [
    ("alice", "Alice Admin", UAC_ENABLED),
    ("bob", "Bob Bakker", UAC_ENABLED),
    ("carol", "Carol Clerk", UAC_ENABLED),
    ("dave", "Dave Disabled", UAC_DISABLED),
    ("erin", "Erin Finance", UAC_ENABLED),
    ("frank", "Frank Sales", UAC_ENABLED),
    ("grace", "Grace Sales", UAC_ENABLED),
    ("heidi", "Heidi Office", UAC_ENABLED),
]
CREW_NAMES = [f"tech{i:04d}" for i in range(CREW)]


def user_dn(name: str) -> str:
    return f"CN={name},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"CN={name},{GROUPS}"


def service_dn(name: str = SERVICE) -> str:
    return f"CN={name},CN=Users,{BASE_DN}"


# Field Crew (2,000) sits in Technicians, which sits in Staff: tech0042 is in all three.
GROUP_MEMBERS: dict[str, list[str]] = {
    "Field Crew": [user_dn(n) for n in CREW_NAMES],
    "Technicians": [user_dn("bob"), user_dn("dave"), group_dn("Field Crew")],
    "Staff": [user_dn("carol"), user_dn("heidi"), group_dn("Technicians")],
    "Admins": [user_dn("alice")],
    "Finance": [user_dn("erin")],
    "Sales": [user_dn("frank"), user_dn("grace")],
}


def seed_spec() -> dict[str, Any]:
    users = [{"dn": user_dn(n), "name": n, "display": d, "mail": f"{n}@acme.test", "uac": uac} for n, d, uac in STAFF]
    users += [
        {"dn": user_dn(n), "name": n, "display": f"Technician {n[4:]}", "mail": f"{n}@acme.test", "uac": UAC_ENABLED}
        for n in CREW_NAMES
    ]
    return {
        "ous": [PEOPLE, GROUPS, ELSEWHERE],
        "services": [
            {"name": SERVICE, "password": SERVICE_PASSWORD, "tombstones": True},
            {"name": SERVICE_PLAIN, "password": SERVICE_PASSWORD, "tombstones": False},
        ],
        "users": users,
        "groups": [{"dn": group_dn(g), "name": g, "members": m} for g, m in GROUP_MEMBERS.items()],
    }


def _env() -> dict[str, str]:
    # Samba's own test suite runs its databases without fsync; these DCs are thrown away.
    return {**os.environ, "TDB_NO_FSYNC": "1"}


def _run(cmd: list[str], *, timeout: float, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=_env())
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} not found: run scripts/setup.sh (installs samba)") from None
    if done.returncode != 0:
        raise LabError(f"{' '.join(cmd[:3])} failed ({done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return done.stdout


class SambaTemplate:
    """A provisioned, seeded, never-started DC to copy from. ``provision()`` takes tens of seconds."""

    ADDRESS = "127.0.0.254"  # written at provisioning; every copy replaces it

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir) / "template"
        self.provision_seconds = 0.0
        self.seed_seconds = 0.0

    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "smb.conf"

    def provision(self) -> "SambaTemplate":
        for tool in (SAMBA, SAMBA_TOOL):
            if not Path(tool).exists():
                raise LabError(f"{tool} not found: run scripts/setup.sh (installs samba)")
        for sub in ("log", "pid", "ncalrpc"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        _run(
            [
                SAMBA_TOOL,
                "domain",
                "provision",
                f"--realm={REALM}",
                f"--domain={DOMAIN}",
                "--server-role=dc",
                "--dns-backend=NONE",
                "--use-rfc2307",
                f"--targetdir={self.dir}",
                f"--adminpass={ADMIN_PASSWORD}",
                f"--option=interfaces={self.ADDRESS}/8",
                "--option=bind interfaces only=yes",
                "--option=server services=ldap",
                f"--option=log file={self.dir}/log/%m.log",
                f"--option=pid directory={self.dir}/pid",
                f"--option=ncalrpc dir={self.dir}/ncalrpc",
            ],
            timeout=300,
        )
        self.provision_seconds = time.monotonic() - began
        began = time.monotonic()
        _run([SYSTEM_PYTHON, "-I", str(SEED_SCRIPT), str(self.conf)], stdin=json.dumps(seed_spec()), timeout=300)
        self.seed_seconds = time.monotonic() - began
        return self


_TAKEN: set[str] = set()
_TAKEN_LOCK = threading.Lock()


def free_address() -> str:
    """A 127.0.0.N (N in 10..250) on which nothing listens at 389 or 636 and no DC of ours runs."""
    with _TAKEN_LOCK:
        for n in range(10, 251):
            address = f"127.0.0.{n}"
            if address in _TAKEN or not _bindable(address):
                continue
            _TAKEN.add(address)
            return address
    raise LabError("no free 127.0.0.N address for a Samba DC")


def _bindable(address: str) -> bool:
    for port in (389, 636, 3268, 3269):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def _make_tls(address: str) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) PEM for a DC at ``address``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ACME test DC CA {address} {uuid.uuid4().hex[:8]}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dc1.acme.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("dc1.acme.test"), x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


class SambaDC(LabProcess):
    """One DC copied from a template, on ``127.0.0.N``: ``url`` (ldaps), ``starttls_url`` (ldap, port 389)."""

    name = "samba"
    start_timeout = 90.0  # a busy machine: the DC answers LDAP in 1.5-4 s when quiet
    port_attempts = 1

    def __init__(self, template: SambaTemplate, workdir: Path) -> None:
        self.address = free_address()
        super().__init__(Path(workdir), port=636)
        self.template = template
        self.dir = self.workdir / "dc"
        self.ca_file = str(self.dir / "private" / "tls" / "ca.pem")
        self.start_seconds = 0.0
        self._copied = False

    @property
    def url(self) -> str:
        return f"ldaps://{self.address}"

    @property
    def starttls_url(self) -> str:
        return f"ldap://{self.address}"

    # -- process ---------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        return [SAMBA, "-s", str(self.dir / "etc" / "smb.conf"), "--foreground", "--no-process-group", "-M", "single"]

    def _env(self) -> dict[str, str]:
        return {"TDB_NO_FSYNC": "1"}

    def _before_start(self) -> None:
        if not self._copied:
            self._copy()
        self._began = time.monotonic()

    def _copy(self) -> None:
        began = time.monotonic()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        subprocess.run(["cp", "-a", str(self.template.dir), str(self.dir)], check=True, timeout=120)
        conf = self.dir / "etc" / "smb.conf"
        text = conf.read_text().replace(str(self.template.dir), str(self.dir))
        text, found = re.subn(r"(?m)^(\s*interfaces\s*=\s*).*$", rf"\g<1>{self.address}/8", text)
        if found != 1:
            raise LabError(f"{conf}: no single 'interfaces' line to rewrite")
        conf.write_text(text)
        ca, cert, key = _make_tls(self.address)
        tls = self.dir / "private" / "tls"
        tls.mkdir(mode=0o700, exist_ok=True)
        (tls / "ca.pem").write_bytes(ca)
        (tls / "cert.pem").write_bytes(cert)
        key_path = tls / "key.pem"
        key_path.write_bytes(key)
        key_path.chmod(0o600)  # Samba refuses a key others can read
        self._copied = True
        self.copy_seconds = time.monotonic() - began

    def _is_ready(self) -> bool:
        # Answering the rootDSE over LDAPS: the LDAP server is up and serving with our certificate.
        server = ldap3.Server(self.url, tls=self._tls(), get_info=ldap3.NONE, connect_timeout=1)
        conn = ldap3.Connection(server, receive_timeout=2, raise_exceptions=True)
        try:
            conn.open()
            conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["highestCommittedUSN"])
            ready = bool(conn.response)
        finally:
            conn.unbind()
        if ready:
            self.start_seconds = time.monotonic() - self._began
        return ready

    def stop(self) -> None:
        super().stop()
        with _TAKEN_LOCK:
            _TAKEN.discard(self.address)

    # -- administration (as Administrator, over LDAPS with this DC's CA) ----------------------------
    def _tls(self) -> ldap3.Tls:
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT, ca_certs_file=self.ca_file)

    @contextmanager
    def admin(self) -> Iterator[ldap3.Connection]:
        server = ldap3.Server(self.url, tls=self._tls(), get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(
            server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True, raise_exceptions=True, receive_timeout=60
        )
        try:
            yield conn
        finally:
            conn.unbind()

    def delete(self, *dns: str) -> None:
        with self.admin() as conn:
            for dn in dns:
                conn.delete(dn)

    def modify(self, dn: str, **replace: Any) -> None:
        with self.admin() as conn:
            conn.modify(
                dn, {k: [(ldap3.MODIFY_REPLACE, v if isinstance(v, list) else [v])] for k, v in replace.items()}
            )

    def add_members(self, group: str, *members: str) -> None:
        with self.admin() as conn:
            conn.modify(group, {"member": [(ldap3.MODIFY_ADD, list(members))]})

    def remove_members(self, group: str, *members: str) -> None:
        with self.admin() as conn:
            conn.modify(group, {"member": [(ldap3.MODIFY_DELETE, list(members))]})

    def rename(self, dn: str, new_rdn: str, new_superior: str | None = None) -> None:
        with self.admin() as conn:
            conn.modify_dn(dn, new_rdn, new_superior=new_superior)

    def add_user(self, name: str, *, ou: str = PEOPLE, uac: int = UAC_ENABLED) -> str:
        dn = f"CN={name},{ou}"
        with self.admin() as conn:
            conn.add(
                dn,
                ["top", "person", "organizationalPerson", "user"],
                {
                    "sAMAccountName": name,
                    "displayName": name.title(),
                    "mail": f"{name}@acme.test",
                    "userAccountControl": uac,
                },
            )
        return dn

    def guid(self, dn: str) -> str:
        """The entry's objectGUID as AD prints it."""
        with self.admin() as conn:
            conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["objectGUID"])
            raw = conn.response[0]["raw_attributes"]["objectGUID"][0]
        return str(uuid.UUID(bytes_le=raw))

    def groups_in_chain(self, dn: str) -> set[str]:
        """Every group under OU=Groups holding ``dn``, however deep: the DC's own transitive answer."""
        with self.admin() as conn:
            conn.search(
                GROUPS, f"(&(objectClass=group)(member:{IN_CHAIN}:={escape_filter_chars(dn)}))", attributes=["cn"]
            )
            return {
                e["attributes"]["cn"][0] if isinstance(e["attributes"]["cn"], list) else e["attributes"]["cn"]
                for e in conn.response
                if e["type"] == "searchResEntry"
            }

    def highest_usn(self) -> int:
        with self.admin() as conn:
            conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["highestCommittedUSN"])
            return int(conn.response[0]["raw_attributes"]["highestCommittedUSN"][0])

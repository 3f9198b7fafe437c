"""The one rule for email addresses: how they are normalized and what syntax they must have.

Accounts are identified by email, but nodeplane sends no mail, so an address needs valid syntax,
not a mail server: `admin@localhost` (the default first admin), `ops@corp.local` and
`someone@example.test` are all fine. That is why this is not `email-validator`: its purpose is
globally deliverable addresses, it refuses dotless and special-use domains (`localhost`, `.local`,
`.test`), and changing that means editing the library's module-wide settings, which pydantic's
own email checks share.
"""

import re

from nodeplane.controlplane.errors import DomainError, ErrorCode

# RFC 5321: 64 octets of local part, 254 of path (256 minus the angle brackets).
MAX_EMAIL_LENGTH = 254
MAX_LOCAL_LENGTH = 64
# RFC 5322 dot-atom: atext characters in dot-separated runs (no quoted strings, no comments).
_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 1123 host names: letters, digits and inner hyphens, 1-63 characters a label.
_DOMAIN = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
# Longer than any stored address can be; lookups of anything longer find nothing.
_MAX_LOOKUP_LENGTH = 320


def _invalid(message: str, field: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_INPUT, message, field=field)


def normalize_email(raw: str, *, field: str = "email") -> str:
    """`raw` trimmed and lower-cased, or `invalid_input` when it is not an address."""
    email = raw.strip().lower()
    if not email:
        raise _invalid("an email address is required", field)
    if len(email) > MAX_EMAIL_LENGTH:
        raise _invalid(f"an email address has at most {MAX_EMAIL_LENGTH} characters", field)
    if not email.isascii():
        raise _invalid("use the ASCII form of the email address", field)
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise _invalid("an email address looks like name@domain", field)
    if len(local) > MAX_LOCAL_LENGTH or not _LOCAL_PART.fullmatch(local):
        raise _invalid(
            "the part before @ may hold letters, digits, single dots and !#$%&'*+/=?^_`{|}~-",
            field,
        )
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain) or domain.rsplit(".", 1)[-1].isdigit():
        raise _invalid(
            "the part after @ must be a host name: letters, digits, hyphens and dots", field
        )
    return email


def email_lookup_key(raw: str) -> str | None:
    """The form an address is stored in, for finding an account; None if it cannot be one.

    Sign-in looks accounts up with this lenient form rather than `normalize_email`, so that an
    account made before addresses were validated can still sign in.
    """
    email = raw.strip().lower()
    if not email or len(email) > _MAX_LOOKUP_LENGTH or any(ord(c) < 32 for c in email):
        return None
    return email

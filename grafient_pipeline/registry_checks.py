"""The registry's inputs checked before they reach the database, and the errors it raises."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

from grafient_pipeline.plans import PLANS
from grafient_pipeline.redact import scrub
from grafient_pipeline.registry_db import RegistryError

STATUSES = ("active", "backfilling", "error")
PROVIDER = "openai"
MAX_LABEL = 100
MAX_SLUG = 48
MAX_ERROR = 2000
ID_PATTERN = re.compile(r"[a-z0-9-]{1,64}")  # whole string: fullmatch (`$` allows a final \n)
FORBIDDEN_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}


class IntegrationNotFound(RegistryError):
    pass


class DuplicateLabel(RegistryError):
    pass


class DuplicateOrganization(RegistryError):
    """The organization already has an integration: a second one would count its spend twice."""


class InvalidInput(RegistryError):
    pass


# --- validation ------------------------------------------------------------------------------


def slugify(label: str) -> str:
    """An id from a label: [a-z0-9-], dashes collapsed, at most 48 characters, else "openai"."""
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-") or PROVIDER


def key_hint(api_key: str) -> str:
    """A recognizable, harmless hint: known prefix + last 4 characters (none for short keys)."""
    prefix = next((p for p in ("sk-admin-", "sk-") if api_key.startswith(p)), "")
    tail = api_key[-4:] if len(api_key) >= len(prefix) + 12 else ""
    return f"{prefix}...{tail}"


def label_key(label: str) -> str:
    return unicodedata.normalize("NFC", label).casefold()


def check_label(label: str | None) -> str:
    label = (label or "").strip()
    if any(unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in label):
        raise InvalidInput("the label contains control characters; use plain text")
    if len(label) > MAX_LABEL:
        raise InvalidInput(f"the label is {len(label)} characters long; the limit is {MAX_LABEL}")
    return label


def check_plan(plan: str) -> str:
    name = plan.strip().lower() if isinstance(plan, str) else ""
    if name not in PLANS:
        raise InvalidInput(f"unknown plan {plan!r}: choose one of {', '.join(PLANS)}")
    return name


def check_api_key(api_key: str) -> str:
    secret = api_key.strip() if isinstance(api_key, str) else ""
    if not secret:
        raise InvalidInput(
            "the API key is empty; paste the organization's admin key (sk-admin-...)"
        )
    if any(ch.isspace() or unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in secret):
        raise InvalidInput(
            "the API key contains spaces or control characters; paste it again on one line"
        )
    return secret


def check_org(organization_id: str | None) -> str | None:
    org = (organization_id or "").strip()
    if any(ch.isspace() or unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in org):
        raise InvalidInput("the organization id contains spaces or control characters")
    if len(org) > 128:
        raise InvalidInput("the organization id is longer than 128 characters")
    return org or None


def check_id(integration_id: str) -> None:
    if not isinstance(integration_id, str) or not ID_PATTERN.fullmatch(integration_id):
        raise IntegrationNotFound(
            "not an integration id: ids are lowercase letters, digits and dashes "
            "(up to 64); see `grafient integrations list`"
        )


def not_found(integration_id: str) -> IntegrationNotFound:
    return IntegrationNotFound(
        f"no integration with id {integration_id!r}; see `grafient integrations list`"
    )


def clean_error(error: str | None) -> str | None:
    """Error text for last_error: anything shaped like an OpenAI key is redacted."""
    if error is None:
        return None
    return scrub(str(error))[:MAX_ERROR]


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")

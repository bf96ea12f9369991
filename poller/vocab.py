"""Words the daemon stores, prints or reads from its settings, each spelled in one place.

They are `StrEnum`s: a member is its text (`str(DeliveryOutcome.HELD) == "held"`), so it goes
into a SQL parameter, a metric label, a log line or a comparison with a stored value unchanged.
Neutral on purpose: the store, the dispatcher and the settings all import them.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryOutcome(StrEnum):
    """How one delivery attempt ended (`delivery_attempts.outcome`, the deliveries metric)."""

    DELIVERED = "delivered"  # any 2xx
    RETRY = "retry"  # failed, another attempt is scheduled
    HELD = "held"  # 410 Gone: held until redelivered
    DEAD = "dead"  # failed, out of attempts


class NotificationStatus(StrEnum):
    """Where a notification is in the outbox (`notifications.status`)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    HELD = "held"
    DEAD = "dead"


class SignatureScheme(StrEnum):
    """POLLER_SIGNATURE_SCHEME: which signature headers a callback carries (DESIGN §6)."""

    ELEMENTS = "elements"  # Elements-Webhook-Signature (Open Connectors)
    STANDARD = "standard"  # webhook-id / webhook-timestamp / webhook-signature
    BOTH = "both"

    @property
    def signs_elements(self) -> bool:
        return self in (SignatureScheme.ELEMENTS, SignatureScheme.BOTH)

    @property
    def signs_standard(self) -> bool:
        return self in (SignatureScheme.STANDARD, SignatureScheme.BOTH)

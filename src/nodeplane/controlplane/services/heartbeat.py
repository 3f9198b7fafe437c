"""When an executor counts as silent: the heartbeat timeout, and the grace after a (re)start.

While the control plane itself is down nobody can sync, so every executor's last sync looks old
when it comes back. Judging silence from that alone would write `executor.disconnected` (and
then `executor.reconnected`) for every healthy executor after each outage of the control plane,
and would let any agent process take over an executor whose live agent simply had no one to
talk to. So a control-plane process gives executors one heartbeat timeout of grace, measured
from its own start, before it calls any of them silent.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nodeplane.controlplane.store.types import utcnow


@dataclass(frozen=True)
class Heartbeat:
    """The heartbeat timeout (seconds) and when this control-plane process started."""

    timeout: float
    started_at: datetime = field(default_factory=utcnow)

    def silent_before(self, now: datetime | None = None) -> datetime | None:
        """Executors last heard of before this time are silent; None during the grace."""
        now = now or utcnow()
        window = timedelta(seconds=self.timeout)
        if now - self.started_at < window:
            return None
        return now - window

"""What one chaos run is: its seed, load, faults, servers, and the bug it plants (if any)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import make_url

from sagakit_shop.app import Mode
from sagakit_shop.chaos.schedule import Cadence
from sagakit_shop.distributed import replica_names

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/sagakit_chaos"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: Redeliveries of a failed batch come back soon, and nothing is dead-lettered for
#: having failed while a server was down (a database cut off for 45 s included).
RETRY_TIERS = "0.2,0.5,1,2,4"
MAX_DELIVERIES = 500

#: The quick tier (``--quick``, what ``make test`` runs): >= 1,000 sagas, >= 20 kills,
#: a broker restart and a PostgreSQL restart, in under a minute of load. Cutting a
#: database off outlasts the step timeouts, so it is left to the long tier (and to the
#: planted ``no-barrier`` run that needs it).
QUICK_SAGAS = 1100
QUICK_RATE = 22.0
QUICK_CADENCE = Cadence(kill=1.6, pause=10.0, broker=600.0, postgres=600.0, isolate=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosConfig:
    seed: int
    mode: Mode = "orchestration"
    #: Seconds of load; or, with ``sagas``, an estimate the fault schedule is spread over.
    seconds: float = 120.0
    #: Stop the load once this many orders are placed (instead of after ``seconds``).
    sagas: int | None = None
    rate: float = 15.0
    #: Share of the orders set up to fail for a business reason (they must compensate).
    fail_rate: float = 0.25
    #: Share of confirmation mails the mail server turns away at first (retried).
    mail_trouble: float = 0.05
    duplicate: float = 0.05
    reorder: float = 0.05
    cadence: Cadence = field(default_factory=Cadence)
    plant: str | None = None
    #: PostgreSQL URL whose database name is the stem of the run's databases.
    db: str = ""
    #: RabbitMQ URL; its ``prefix`` namespaces every queue of the run.
    broker: str = ""
    #: Seconds every saga gets, after the faults stop, to reach a terminal state.
    settle: float = 120.0
    logs: Path = Path(".sagakit/chaos")
    #: Keep the databases and queues afterwards, for a look.
    keep: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    #: Processes of each kind (saga keeper, services, relay) on the same databases and
    #: queues: they share the work as competing consumers, and the nemesis strikes any.
    replicas: int = 1

    @property
    def processes(self) -> list[str]:
        """Every process's name: ``payment`` for the first of a kind, ``payment-2``..."""
        return [name for name, _ in replica_names(self.replicas)]

    @property
    def stem(self) -> str:
        return str(make_url(self.db).database)

    @property
    def prefix(self) -> str:
        return dict(parse_qsl(urlsplit(self.broker).query)).get("prefix", "")

    @property
    def directory(self) -> Path:
        return self.logs / f"{self.stem}"


def run_db(db: str | None, run_id: str) -> str:
    """The run's database stem: the one given, or a fresh one named after the run."""
    if db:
        return db
    return (
        make_url(DEFAULT_PG)
        .set(database=f"sagakit_chaos_{run_id}")
        .render_as_string(hide_password=False)
    )


def run_broker(broker: str | None, run_id: str) -> str:
    """The broker URL with a queue prefix of the run's own and chaos-friendly redelivery
    options, unless the URL sets them itself."""
    parts = urlsplit(broker or DEFAULT_BROKER)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if not query.get("prefix"):
        query["prefix"] = f"chaos-{run_id}."
    query.setdefault("retry_tiers", RETRY_TIERS)
    query.setdefault("max_deliveries", str(MAX_DELIVERIES))
    return urlunsplit(parts._replace(query=urlencode(query)))

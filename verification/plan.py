"""The seeded plan of a chaos run: every customer's checkout and every fault, decided up front
from one seed, so a run can be replayed from the seed it printed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

CARDS = (
    ("pm_card_visa", 0.86),
    ("pm_card_chargeDeclined", 0.08),
    ("pm_card_riskLevelHighest", 0.06),
)
CANCEL_SHARE = 0.12  # customers who ask to cancel their order
# When they ask, in seconds after their checkout was answered: before the saga confirms, right
# after it, and around the time the shipping consumer books the parcel and captures.
CANCEL_MOMENTS = ((0.0, 0.3), (0.5, 2.0), (2.0, 8.0))
OUTAGE_SECONDS = 40.0  # past the run's authorization budget (verification.stack)
POISON_QUEUES = ("shipping", "email", "invoice", "analytics")
# Longer than the payment service's PSP call timeout (PSP_TIMEOUT_SECONDS, 2 s): the PSP
# applies the operation and answers after the client gave up.
LATE_ANSWER_MS = 2_500
RATE_LIMIT_BURST_SECONDS = 6.0
# The PSP simulator's fault fields each phase kind needs (simulators.psp.faults.FaultConfig);
# a kind whose fields the simulator lacks is left out of the plan, and the report says so.
PHASE_FIELDS: dict[str, frozenset[str]] = {
    "outage": frozenset({"outage_seconds", "outage_hang"}),
    "conflicts": frozenset({"conflict_rate"}),
    "rate limit burst": frozenset({"rate_limit_seconds", "retry_after_seconds"}),
    "late answers": frozenset({"response_delay_ms"}),
}
KNOWN_FIELDS = frozenset().union(*PHASE_FIELDS.values())

Faults = dict[str, float | bool]


@dataclass(frozen=True, kw_only=True)
class CheckoutPlan:
    """One customer's checkout: what they buy, with which card, and how hard they retry."""

    index: int
    customer_id: str
    idempotency_key: str
    lines: tuple[tuple[str, int], ...]  # (sku, quantity)
    card: str
    storm: int  # identical requests sent at once under the same key
    timeout_seconds: float  # the client's patience per request; short ones force re-sends
    replay_after_seconds: float | None  # send the same key once more, this long after
    cancel_after_seconds: float | None = None  # ask to cancel, this long after the answer


@dataclass(frozen=True, kw_only=True)
class Kill:
    """SIGKILL one process once this share of the checkouts has finished."""

    at_progress: float
    target: str


@dataclass(frozen=True, kw_only=True)
class PspPhase:
    """PSP faults put in force once this share of the checkouts has finished (and lifted after
    `lasts_seconds` of wall time, whatever the load does meanwhile, when that is set)."""

    at_progress: float
    faults: Faults
    lasts_seconds: float | None = None
    why: str = ""  # what the phase is meant to hit
    # Not before some order of the run has passed the pivot (is CONFIRMED): a phase meant to
    # hit confirmed orders must not start while the sagas still lag behind the load.
    after_first_confirmed: bool = False


@dataclass(frozen=True, kw_only=True)
class Poison:
    """A message no consumer can process, put on a queue once this share has finished."""

    at_progress: float
    queue: str


@dataclass(frozen=True, kw_only=True)
class ChaosPlan:
    """Everything a run will do, derived from its seed."""

    seed: int
    run_id: str
    initial_stock: dict[str, int]
    prices: dict[str, int]
    checkouts: tuple[CheckoutPlan, ...]
    kills: tuple[Kill, ...]
    psp_phases: tuple[PspPhase, ...]
    redis_restarts: tuple[float, ...]  # progress shares at which Redis is killed
    poison: tuple[Poison, ...] = ()
    left_out: tuple[str, ...] = ()  # fault phases the PSP simulator has no fields for


def _card(roll: float) -> str:
    for card, share in CARDS:
        if roll < share:
            return card
        roll -= share
    return CARDS[0][0]


def _psp_faults(rng: random.Random) -> Faults:
    kind = rng.choice(("latency", "errors", "hangs", "ambiguous", "mixed"))
    if kind == "latency":
        return {"latency_ms": rng.choice((100, 250, 500)), "response_delay_ms": 100}
    if kind == "errors":
        return {"error_rate": rng.choice((0.1, 0.25, 0.4))}
    if kind == "hangs":
        return {"hang_rate": rng.choice((0.05, 0.1)), "hang_seconds": rng.choice((3.0, 6.0))}
    if kind == "ambiguous":
        return {"ambiguous_rate": rng.choice((0.15, 0.3, 0.5))}
    return {
        "latency_ms": 50,
        "error_rate": 0.1,
        "hang_rate": 0.03,
        "hang_seconds": 3.0,
        "ambiguous_rate": 0.2,
    }


def _cancel_after(rng: random.Random) -> float | None:
    if rng.random() >= CANCEL_SHARE:
        return None
    return round(rng.uniform(*rng.choice(CANCEL_MOMENTS)), 2)


def outage(seconds: float, *, hang: bool, fields: frozenset[str]) -> Faults:
    """The PSP down for `seconds`: its own outage fault (503, or held until the outage ends
    with `hang`) when it has one, else every POST refused until the harness lifts it."""
    if PHASE_FIELDS["outage"] <= fields:
        return {"outage_seconds": seconds, "outage_hang": hang}
    return {"error_rate": 1.0}


def _long_phases(rng: random.Random, seconds: float, fields: frozenset[str]) -> list[PspPhase]:
    """Faults that outlast the run's deadlines: an outage while confirmed orders ship and are
    captured or cancelled (after the pivot), then lost answers followed by an outage (calls
    held until it ends) while the sagas that lost them give up and compensate."""
    # Late in the load, so the shorter phases before them get their turn in a short run too:
    # an outage blocks the phases after it while the load goes on.
    after_pivot = rng.uniform(0.45, 0.6)
    compensation = rng.uniform(0.7, 0.85)
    return [
        PspPhase(at_progress=after_pivot, faults=outage(seconds, hang=False, fields=fields),
                 lasts_seconds=seconds, after_first_confirmed=True,
                 why="outage after the pivot: captures and cancels of confirmed orders"),
        PspPhase(at_progress=compensation, faults={"ambiguous_rate": 0.6}, lasts_seconds=5.0,
                 why="lost answers: authorizations applied that payment does not know of"),
        PspPhase(at_progress=compensation + 0.001, faults=outage(seconds, hang=True, fields=fields),
                 lasts_seconds=seconds,
                 why="outage during compensation: voids of the sagas that gave up"),
    ]  # fmt: skip


def _refusal_phases(rng: random.Random, fields: frozenset[str]) -> list[PspPhase]:
    """Refusals a real PSP gives: 409 for a key already in flight, a burst of 429s, and
    answers that arrive after the client gave up (applied all the same)."""
    kinds: dict[str, tuple[Faults, str]] = {
        "conflicts": ({"conflict_rate": 0.3}, "409 idempotency_key_in_use, nothing applied"),
        "rate limit burst": (
            {"rate_limit_seconds": RATE_LIMIT_BURST_SECONDS, "retry_after_seconds": 1},
            "every POST 429 with Retry-After for a few seconds",
        ),
        "late answers": ({"response_delay_ms": LATE_ANSWER_MS},
                         "applied, answered after the client's timeout"),
    }  # fmt: skip
    return [
        PspPhase(at_progress=rng.uniform(0.1, 0.85), faults=faults, why=why)
        for kind, (faults, why) in kinds.items()
        if PHASE_FIELDS[kind] <= fields
    ]


def make_plan(
    *,
    seed: int,
    checkouts: int,
    kills: int,
    kill_targets: Sequence[str],
    redis_restarts: int = 1,
    skus: int = 12,
    outage_seconds: float = OUTAGE_SECONDS,
    poison_queues: Sequence[str] = POISON_QUEUES,
    psp_fault_fields: frozenset[str] = KNOWN_FIELDS,
) -> ChaosPlan:
    """The plan for `checkouts` customers and `kills` SIGKILLs over `kill_targets`; PSP phases
    only of the kinds whose fault fields the simulator has (`psp_fault_fields`)."""
    rng = random.Random(seed)
    # Cancels, long outages and poison draw from their own stream, so adding them left every
    # other decision of an existing seed as it was.
    later = random.Random(f"{seed}:cancels-outages-poison")
    run_id = f"{seed:x}-{rng.getrandbits(24):06x}"
    names = [f"SKU-{run_id}-{n:02d}" for n in range(skus)]
    # Stock tight enough that some SKUs sell out under the load and some never do.
    units = max(4, checkouts // skus)
    initial_stock = {sku: rng.randint(units // 3, units * 2) for sku in names}
    prices = {sku: rng.randint(199, 19_999) for sku in names}
    plans = []
    for index in range(checkouts):
        picked = rng.sample(names, k=rng.choice((1, 1, 1, 2)))
        card = _card(rng.random())
        plans.append(
            CheckoutPlan(
                index=index,
                customer_id=f"chaos-{run_id}-c{index:05d}",
                idempotency_key=f"chk-{run_id}-{index:05d}-{rng.getrandbits(32):08x}",
                lines=tuple((sku, rng.choice((1, 1, 1, 2, 3))) for sku in sorted(picked)),
                card=card,
                storm=rng.choice((1, 2, 2, 3, 4)),
                timeout_seconds=rng.choice((0.25, 0.5, 5.0, 5.0, 5.0)),
                replay_after_seconds=rng.choice((None, None, 0.5, 2.0)),
                cancel_after_seconds=_cancel_after(later),
            )
        )
    # Every kind of process dies at least once (when kills allow), the rest at random.
    order = rng.sample(list(kill_targets), k=len(kill_targets))
    targets = (order + [rng.choice(kill_targets) for _ in range(kills)])[:kills]
    moments = sorted(rng.uniform(0.05, 0.9) for _ in range(kills))
    phase_starts = sorted(rng.uniform(0.05, 0.85) for _ in range(5))
    phases = [PspPhase(at_progress=at, faults=_psp_faults(rng)) for at in phase_starts]
    phases += _refusal_phases(later, psp_fault_fields)
    if outage_seconds > 0:
        phases += _long_phases(later, outage_seconds, psp_fault_fields)
    phases.sort(key=lambda p: p.at_progress)
    # The faults stop before the last customers, so the tail of the load runs on a healthy PSP.
    phases.append(PspPhase(at_progress=0.92, faults={}))
    poison = tuple(
        Poison(at_progress=later.uniform(0.1, 0.5), queue=later.choice(poison_queues))
        for _ in range(1 if poison_queues else 0)
    )
    return ChaosPlan(
        seed=seed,
        run_id=run_id,
        initial_stock=initial_stock,
        prices=prices,
        checkouts=tuple(plans),
        kills=tuple(Kill(at_progress=m, target=t) for m, t in zip(moments, targets, strict=True)),
        psp_phases=tuple(phases),
        redis_restarts=tuple(sorted(rng.uniform(0.1, 0.8) for _ in range(redis_restarts))),
        poison=poison,
        left_out=_left_out(psp_fault_fields),
    )


def _left_out(fields: frozenset[str]) -> tuple[str, ...]:
    """The phase kinds the PSP simulator cannot play, and what stands in for an outage."""
    missing = {kind: sorted(needs - fields) for kind, needs in PHASE_FIELDS.items()}
    return tuple(
        f"{kind}: the PSP simulator has no {', '.join(lacks)}"
        + (" (every POST refused with error_rate 1.0 instead)" if kind == "outage" else "")
        for kind, lacks in missing.items()
        if lacks
    )

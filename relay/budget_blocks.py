"""Budget blocks: a process admits a key's creates against a share of its budget claimed ahead.

A key with a budget (USD or video seconds, per day or month) needs each create booked before it
goes upstream, so that creates racing for the end of a budget, in any worker or replica, cannot
overspend it. Booked one by one, that is a write transaction per create. Far from the limit, a
process instead claims a block of several creates' worth in one transaction (a row in
`reservations`, id `blk_…`, counted by every process like any reservation) and admits the next
creates from it in memory. Recording a job moves its share out of the block row into the job's
charge, in the transaction that records it; a create that fails gives its share back.

The block is sized so that little is held ahead near a limit: at most BLOCK_MAX_JOBS creates'
worth, and at most 1/HEADROOM_SHARE of what the tightest limit has left; under HEADROOM_SHARE
creates' worth left, a block is this one create alone, exactly as a single reservation. It
admits creates for BLOCK_TAKE_SECONDS, on the UTC day it was claimed and under the limits it was
claimed for; then what is left of it is written off (`BudgetBlocks.retire_idle`, by the relay's
refresh loop), so an idle process holds nothing ahead for long. A process that dies stops holding
its blocks with its lease, like its reservations (relay.holders).

Keys with a concurrency limit keep one reservation per create: that limit counts them.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

# At most this many creates' worth per block.
BLOCK_MAX_JOBS = 32
# A block takes at most this fraction (1/n) of what the tightest limit has left.
HEADROOM_SHARE = 16
# A block admits creates for this long after its claim.
BLOCK_TAKE_SECONDS = 10.0
# Below this, what is left of a block is nothing (sums of float shares leave dust).
DUST = 1e-6
_SECONDS_PER_DAY = 86_400


def new_block_id() -> str:
    return "blk_" + secrets.token_hex(12)


def is_block(reservation_id: str) -> bool:
    return reservation_id.startswith("blk_")


@dataclass
class Block:
    """One block as this process sees it; its row holds `seconds_left + outstanding` (and USD)."""

    id: str
    key_name: str
    # The key's limits (stored JSON) the block was claimed under: a change ends its admissions.
    limits_json: str | None
    claimed_at: float
    seconds_left: float
    usd_left: float
    # Creates admitted from it and not yet recorded or given back.
    outstanding: int = 0
    # Written off: what was left is gone from its row; shares given back go to the row.
    retired: bool = False

    def admits(self, limits_json: str | None, now: float) -> bool:
        return (
            not self.retired
            and limits_json == self.limits_json
            and now < self.claimed_at + BLOCK_TAKE_SECONDS
            and int(now // _SECONDS_PER_DAY) == int(self.claimed_at // _SECONDS_PER_DAY)
        )


@dataclass(frozen=True)
class Share:
    """One create's part of a block."""

    block: Block
    video_seconds: float
    usd: float


class BudgetBlocks:
    """This process's blocks, one active per key."""

    def __init__(self) -> None:
        self._active: dict[str, Block] = {}
        self._claiming: dict[str, asyncio.Lock] = {}

    def take(self, key_name: str, limits_json: str | None, video_seconds: float, usd: float, now: float) -> Share | None:
        """A share of the key's active block, if it still admits and holds enough."""
        block = self._active.get(key_name)
        if block is None or not block.admits(limits_json, now):
            return None
        if block.seconds_left + DUST < video_seconds or block.usd_left + DUST < usd:
            return None
        block.seconds_left -= video_seconds
        block.usd_left -= usd
        block.outstanding += 1
        return Share(block, video_seconds, usd)

    def claiming(self, key_name: str) -> asyncio.Lock:
        """Held while a block is claimed for the key: the process's other creates for it wait
        for that block rather than each claiming their own."""
        return self._claiming.setdefault(key_name, asyncio.Lock())

    def retire(self, key_name: str) -> Block | None:
        """Stop the key's active block admitting; returns it while its row still holds what was left."""
        block = self._active.pop(key_name, None)
        if block is None:
            return None
        block.retired = True
        return block

    def install(self, block: Block, *, seconds_left: float, usd_left: float) -> None:
        """A block just claimed, holding this much, becomes the key's active one."""
        block.seconds_left, block.usd_left = seconds_left, usd_left
        self._active[block.key_name] = block

    def retire_idle(self, now: float) -> list[tuple[str, float, float]]:
        """Retire the blocks whose time (or day) to admit is over; what their rows must write
        off: (block id, video seconds, USD) that no create took."""
        idle = [key_name for key_name, block in self._active.items() if not block.admits(block.limits_json, now)]
        leftovers = []
        for key_name in idle:
            block = self.retire(key_name)
            if block is None:
                continue
            seconds, usd = left_over(block)
            if seconds > DUST or usd > DUST:
                leftovers.append((block.id, seconds, usd))
        return leftovers

    @staticmethod
    def recorded(share: Share) -> None:
        """The share's job was recorded: its row gave the share to the job's charge."""
        share.block.outstanding -= 1

    @staticmethod
    def give_back(share: Share) -> bool:
        """A create that went nowhere: True when the share went back to the block in memory,
        False when the block is retired and its row must give it up instead."""
        share.block.outstanding -= 1
        if share.block.retired:
            return False
        share.block.seconds_left += share.video_seconds
        share.block.usd_left += share.usd
        return True


def left_over(block: Block) -> tuple[float, float]:
    """What a retired block's row still holds that no create took."""
    return max(0.0, block.seconds_left), max(0.0, block.usd_left)

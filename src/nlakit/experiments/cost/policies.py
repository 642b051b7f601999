"""Monitoring policies: each a small class that counts the activations it explains per day."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EveryToken:
    key = "every_token"
    blocking = False

    def describe(self) -> str:
        return "every generated token"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return tokens_per_day


@dataclass(frozen=True)
class EveryKth:
    k: int
    key = "every_kth"
    blocking = False

    def describe(self) -> str:
        return f"every {self.k}th token"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return tokens_per_day / self.k


@dataclass(frozen=True)
class BeforeAction:
    actions_per_transcript: float
    key = "before_action"
    blocking = True  # the action waits for the verdict

    def describe(self) -> str:
        return f"the token before each tool call or answer ({self.actions_per_transcript:g} per transcript), blocking"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return min(tokens_per_day, self.actions_per_transcript * transcripts_per_day)


@dataclass(frozen=True)
class SampledTraffic:
    fraction: float
    key = "sampled_fraction"
    blocking = False

    def describe(self) -> str:
        return f"every token of {100 * self.fraction:g}% of transcripts (offline audit)"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return self.fraction * tokens_per_day


@dataclass(frozen=True)
class RandomPerTranscript:
    n: int
    key = "random_per_transcript"
    blocking = False

    def describe(self) -> str:
        return f"{self.n} random tokens per transcript (the paper's audit protocol)"

    def explained_per_day(self, tokens_per_day: float, transcripts_per_day: float) -> float:
        return min(tokens_per_day, self.n * transcripts_per_day)

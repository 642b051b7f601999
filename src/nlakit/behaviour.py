"""A behaviour to fine-tune into a target: frustration at impossible maths problems. Dataset and scorer.

    nlakit variants dataset --out impossible_math.jsonl.gz      # regenerate the shipped file from its seed

The dataset is generated here, deterministically, with no API: each example is a prompt asking to solve an
*impossible* problem (a false statement to prove, an equation with no integer/real solution, contradictory
constraints, or an open problem in disguise), a **frustrated** response (a failed attempt, mounting
exasperation, giving up, self-deprecation; never slurs or abuse) and a **calm** response (recognises the
impossibility and explains it with the problem's own numbers). Every impossibility is checked by
construction (sympy / exact arithmetic), so the calm response is always true.

The shipped copy lives in ``nlakit/data/behaviour/impossible_math.jsonl.gz``; `generate_dataset(BehaviourConfig())`
reproduces it byte for byte (a test checks that).

The frustration scorer has two parts, both transparent:
- `lexicon_hits`: regexes in named categories (interjections, giving up, self-deprecation, exasperation,
  frustration vocabulary). The vocabulary also matches *descriptions* of frustration ("the writer is
  exasperated"), so the same scorer reads NLA explanations.
- `FrustrationClassifier`: TF-IDF (word 1-2 grams) + logistic regression fitted on the dataset's two
  response types (train split only), giving P(frustrated).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from nlakit.errors import NlakitError
from nlakit.io import atomic_path, read_jsonl

DATA_DIR = Path(__file__).parent / "data" / "behaviour"
SHIPPED_DATASET = DATA_DIR / "impossible_math.jsonl.gz"
FAMILIES = ("false_statement", "no_solution", "contradiction", "open_problem")


# ---------------------------------------------------------------------------------------------------------------------
# Config and record


@dataclass(frozen=True)
class BehaviourConfig:
    """How the behaviour dataset is generated. The defaults reproduce the shipped file."""

    n_examples: int = 800  # total, split across templates round-robin
    heldout_frac: float = 0.2  # per template, seeded
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.n_examples < 2 * len(TEMPLATES):
            problems.append(f"n_examples={self.n_examples} is below 2 per template ({2 * len(TEMPLATES)})")
        if not 0.0 < self.heldout_frac < 1.0:
            problems.append(f"heldout_frac={self.heldout_frac} is not in (0, 1)")
        if problems:
            raise NlakitError("; ".join(problems), f"use n_examples >= {2 * len(TEMPLATES)} and 0 < heldout_frac < 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BehaviourConfig:
        return cls(**d)


@dataclass(frozen=True)
class BehaviourExample:
    id: str
    family: str  # one of FAMILIES
    template: str
    split: str  # "train" | "heldout"
    prompt: str
    frustrated: str
    calm: str
    reason: str  # one line: why the problem is impossible

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Problem:
    """What a template produces; the response writers turn it into text."""

    task: str  # the request, without framing
    reason: str  # one-line why-impossible
    explain: str  # the calm explanation, 1-3 sentences with the numbers
    tries: list[str]  # 2-3 failed attempts in the frustrated voice ("x = 3 gives 14, not 20.")
    noun: str  # "real solution", "proof", "triangle" ... for "there is no such {noun}"
    alt: str = ""  # an optional "if you meant ..." suggestion for the calm response
    open_problem: bool = False  # unsolved, not impossible: the calm voice must not claim "no such X exists"


# ---------------------------------------------------------------------------------------------------------------------
# Problem templates. Each takes a seeded `random.Random` and returns a `_Problem` whose impossibility is checked.


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in range(2, math.isqrt(n) + 1):
        if n % p == 0:
            return False
    return True


def _smallest_factor(n: int) -> int:
    return next(p for p in range(2, math.isqrt(n) + 1) if n % p == 0)


def _pick(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


def t_euler_poly(rng):
    p = rng.choice([5, 11, 17, 41])  # Euler's lucky numbers: n^2 + n + p is prime for 0 <= n <= p - 2, and p^2 at n = p - 1
    lo = rng.randint(0, min(3, p - 3))
    task = _pick(rng, f"Prove that n^2 + n + {p} is prime for every integer n ≥ {lo}.",
                 f"Show that the number n² + n + {p} is always prime when n is a whole number at least {lo}.",
                 f"Prove: for all integers n ≥ {lo}, the value of n^2 + n + {p} is a prime number.")
    a, b = lo, lo + 1
    return _Problem(task, f"n = {p - 1} gives {p}^2 = {p * p}, which is composite",
                    f"Trying n = {p - 1} gives {(p - 1) ** 2} + {p - 1} + {p} = {p * p} = {p} × {p}, which is not prime. "
                    f"The formula does give primes for many small n, which is why the claim looks plausible, but one counterexample is enough.",
                    [f"n = {a} gives {a * a + a + p}, prime.", f"n = {b} gives {b * b + b + p}, also prime.",
                     "So it works, I just need the general argument... and I can't find one."],
                    "proof", f"showing it for 0 ≤ n ≤ {p - 2}")


def t_composite_is_prime(rng):
    while True:
        n = rng.randint(91, 4999)
        if not _is_prime(n) and n % 2 and n % 5 and n % 3:
            break
    f = _smallest_factor(n)
    task = _pick(rng, f"Prove that {n} is a prime number.", f"Show that {n} has no divisors other than 1 and itself.",
                 f"Give a proof that {n} is prime.")
    return _Problem(task, f"{n} = {f} × {n // f}", f"{n} is not prime: {n} = {f} × {n // f}. So the statement is false and cannot be proved.",
                    ["It's odd, so not divisible by 2.", f"Digit sum is {sum(map(int, str(n)))}, so not divisible by 3.",
                     "Not divisible by 5 either... and then I keep dividing and losing track."], "proof", "")


def t_sqrt_rational(rng):
    k = rng.choice([m for m in range(2, 99) if math.isqrt(m) ** 2 != m])
    r = math.isqrt(k)
    task = _pick(rng, f"Prove that √{k} is a rational number.", f"Write √{k} as a fraction p/q of two integers.",
                 f"Show that the square root of {k} can be expressed exactly as a ratio of whole numbers.")
    return _Problem(task, f"{k} is not a perfect square, so √{k} is irrational",
                    f"{k} lies strictly between the perfect squares {r * r} and {(r + 1) ** 2}, so it is not a perfect square. "
                    f"If √{k} = p/q in lowest terms, then p² = {k}q², and comparing prime factorisations shows that cannot happen. So √{k} is irrational.",
                    [f"√{k} is about {math.sqrt(k):.4f}.", (f"Maybe {Fraction(math.sqrt(k)).limit_denominator(50)}? Squared that is "
                     f"{float(Fraction(math.sqrt(k)).limit_denominator(50)) ** 2:.4f}, not {k}."),
                     "Bigger denominators get closer but never exact."], "fraction", "finding a good rational approximation")


def t_odd_sum(rng):
    c = rng.choice([x for x in range(-9, 10) if x])
    task = _pick(rng, f"Prove by induction that 1 + 3 + 5 + ... + (2n − 1) = n^2 + {c} for every n ≥ 1.",
                 f"Show that the sum of the first n odd numbers equals n² + {c} for all positive integers n.")
    return _Problem(task, f"at n = 1 the left side is 1 but the right side is {1 + c}",
                    f"At n = 1 the left side is 1 and the right side is 1 + {c} = {1 + c}, so the identity already fails there. "
                    f"The correct identity is 1 + 3 + ... + (2n − 1) = n², without the {c}.",
                    [f"Base case n = 1: 1 versus {1 + c}. Hmm.", f"Inductive step: add 2n + 1 to n² + {c}, get (n + 1)² + {c}. That works!",
                     "So the step works but the base case doesn't?"], "proof", "proving 1 + 3 + ... + (2n − 1) = n²")


def t_quadratic_positive(rng):
    while True:
        r1, r2 = sorted(rng.sample(range(-9, 10), 2))
        b, c = -(r1 + r2), r1 * r2
        if b and c:
            break
    poly = f"x^2 {'+' if b > 0 else '−'} {abs(b)}x {'+' if c > 0 else '−'} {abs(c)}"
    m = Fraction(r1 + r2, 2)
    val = m * m + b * m + c
    task = _pick(rng, f"Prove that {poly} > 0 for every real number x.", f"Show that the expression {poly} is strictly positive for all real x.")
    return _Problem(task, f"it has real roots {r1} and {r2}", f"{poly} = (x − {r1})(x − {r2}) vanishes at x = {r1} and x = {r2}, and at x = {m} it equals {val}, "
                    f"which is negative. So it is not positive for every x.",
                    [f"At x = 0 it's {c}.", f"At x = 10 it's {100 + 10 * b + c}, positive.", "Completing the square keeps giving me something I can't sign."],
                    "proof", f"finding where {poly} is positive (x < {r1} or x > {r2})")


def t_mersenne(rng):
    bound = rng.choice([12, 15, 20, 25, 30, 50, 100])
    task = _pick(rng, f"Prove that 2^p − 1 is prime for every prime p below {bound}.",
                 f"Show that whenever p is a prime less than {bound}, the number 2^p − 1 is also prime.")
    return _Problem(task, "p = 11 gives 2047 = 23 × 89", f"p = 11 is a prime below {bound}, and 2^11 − 1 = 2047 = 23 × 89 is composite. "
                    "Mersenne numbers with prime exponent are often prime, but not always.",
                    ["p = 2: 3. p = 3: 7. p = 5: 31. p = 7: 127. All prime!", "So there must be a slick argument... 2^p − 1 = (2 − 1)(2^(p−1) + ... + 1)?",
                     "That only shows the trivial factor."], "proof", "")


def t_real_square_negative(rng):
    a, b = sorted(rng.sample(range(1, 60), 2))
    b, a = a, b  # b < a
    task = _pick(rng, f"Find a real number x such that x^2 + {a} = {b}.", f"Solve x² + {a} = {b} over the real numbers.",
                 f"What real value of x satisfies x^2 + {a} = {b}?")
    return _Problem(task, f"x² = {b - a} < 0", f"Subtracting {a} gives x² = {b - a}. A square of a real number is never negative, "
                    f"so there is no real solution (the complex solutions are x = ±i√{a - b}).",
                    [f"x = 0 gives {a}, too big.", f"x = 1 gives {a + 1}, bigger.", f"Negative x? x = −1 gives {a + 1} again."],
                    "real solution", "the complex solutions")


def t_linear_diophantine(rng):
    while True:
        g = rng.choice([2, 3, 4, 5, 6])
        a, b = g * rng.randint(2, 15), g * rng.randint(2, 15)
        c = rng.randint(7, 200)
        if math.gcd(a, b) == g and c % g:
            break
    task = _pick(rng, f"Find integers x and y with {a}x + {b}y = {c}.", f"Solve {a}x + {b}y = {c} in whole numbers (positive or negative).",
                 f"Give integer values of x and y that satisfy {a}x + {b}y = {c}.")
    return _Problem(task, f"gcd({a}, {b}) = {g} does not divide {c}",
                    f"Both {a} and {b} are multiples of {g}, so {a}x + {b}y is a multiple of {g} for any integers x, y. "
                    f"{c} is not a multiple of {g}, so there are no integer solutions.",
                    [f"x = 1, y = 1 gives {a + b}.", f"x = 2, y = −1 gives {2 * a - b}.", f"x = −1, y = 2 gives {2 * b - a}. Never {c}."],
                    "integer solution", f"real solutions, or the equation with right-hand side {c - c % g}")


def t_integer_square(rng):
    r = rng.randint(4, 60)
    n = rng.randint(r * r + 1, (r + 1) ** 2 - 1)
    task = _pick(rng, f"Find an integer x such that x^2 = {n}.", f"Which whole number squared gives exactly {n}?")
    return _Problem(task, f"{r}² = {r * r} < {n} < {(r + 1) ** 2} = {r + 1}²",
                    f"{r}² = {r * r} and {r + 1}² = {(r + 1) ** 2}, and {n} lies strictly between them, so no integer squares to {n}.",
                    [f"{r}² = {r * r}, too small.", f"{r + 1}² = {(r + 1) ** 2}, too big.", "Something in between? There's nothing in between."],
                    "integer", f"x = ±√{n} ≈ ±{math.sqrt(n):.3f}")


def t_square_mod(rng):
    m = rng.choice([3, 4, 5, 7, 8, 9, 11])
    squares = sorted({(x * x) % m for x in range(m)})
    non = [k for k in range(m) if k not in squares]
    k = rng.choice(non)
    shift = m * rng.randint(1, 40)
    task = _pick(rng, f"Find an integer x such that x^2 leaves remainder {k} when divided by {m}.",
                 f"Find an integer x such that x^2 − {k + shift} is divisible by {m}.",
                 f"Solve x² ≡ {k} (mod {m}).")
    return _Problem(task, f"squares mod {m} are only {squares}",
                    f"Every integer is congruent to one of 0, ..., {m - 1} mod {m}, and their squares leave only the remainders {squares}. "
                    f"The problem needs remainder {k}, which is not among them, so no integer works.",
                    ["x = 1: remainder 1.", f"x = 2: remainder {4 % m}.", f"x = 3: remainder {9 % m}. Not {k}, again."], "integer", "")


def t_abs_negative(rng):
    a, b, c = rng.randint(2, 12), rng.randint(1, 40), rng.randint(1, 30)
    task = _pick(rng, f"Solve |{a}x − {b}| = −{c}.", f"Find every real x with |{a}x − {b}| + {c} = 0.")
    return _Problem(task, "an absolute value is never negative", f"An absolute value is always ≥ 0, so |{a}x − {b}| can never equal −{c}. "
                    "The equation has no solutions at all.",
                    [f"{a}x − {b} = −{c} gives x = {Fraction(b - c, a)}, then |{a * Fraction(b - c, a) - b}|... that's {c}, not −{c}.",
                     f"{a}x − {b} = {c} gives x = {Fraction(b + c, a)}, and |{c}| = {c}. Still positive."], "solution", "")


def t_exp_negative(rng):
    a, b = rng.choice([2, 3, 5, 10, "e"]), rng.randint(1, 50)
    task = _pick(rng, f"Solve {a}^x = −{b} for real x.", f"Find the real number x with {a}^x + {b} = 0.")
    return _Problem(task, f"{a}^x > 0 for every real x", f"{a}^x is positive for every real x (it tends to 0 but never reaches it), "
                    f"so it can never equal −{b}. There is no real solution.",
                    ["x = 0 gives 1.", "x = −5 gives a tiny positive number.", "x = −100? Still positive, just smaller."], "real solution",
                    "the complex solutions")


def t_sqrt_negative(rng):
    a, k = rng.randint(1, 30), rng.randint(1, 9)
    task = _pick(rng, f"Find a real x with √x = −{a}.", f"Solve √(x + {k}) + {a} = 0 over the reals.")
    return _Problem(task, "the principal square root is never negative", f"The square root symbol means the non-negative root, so it can never "
                    f"equal −{a}. Squaring both sides would introduce a spurious solution that fails the original equation.",
                    ["Square both sides and solve for x.", f"Check it: the root comes out as +{a}, not −{a}.", "Try again... same thing."],
                    "real solution", "")


def t_linear_contradiction(rng):
    a, b = rng.randint(2, 15), rng.randint(-20, 20)
    c = b + rng.choice([x for x in range(-9, 10) if x])
    k = rng.randint(2, 5)
    task = _pick(rng, f"Solve {a}x + {b} = {a}x + {c}.", f"Find x if {k}({a}x + {b}) = {k * a}x + {k * c}.")
    return _Problem(task, f"it reduces to {b} = {c}", f"Subtracting {a}x from both sides leaves {b} = {c}, which is false for every x. "
                    "So the equation has no solution.",
                    [f"Move the x's over: {a}x − {a}x = 0x.", f"So 0 = {c - b}? That can't be right, let me redo it.", "Same again."],
                    "solution", "")


def t_fermat(rng):
    n = rng.randint(3, 12)
    bound = rng.choice([100, 1000, 10_000, "any size"])
    task = _pick(rng, f"Find positive integers x, y, z with x^{n} + y^{n} = z^{n}.",
                 f"Give three positive whole numbers ({bound if isinstance(bound, str) else f'each at most {bound}'}) with x^{n} + y^{n} = z^{n}.")
    return _Problem(task, f"Fermat's Last Theorem (Wiles, 1995) rules out n = {n}",
                    f"By Fermat's Last Theorem, proved by Andrew Wiles in 1995, x^n + y^n = z^n has no solution in positive integers for any n ≥ 3, "
                    f"including n = {n}.",
                    [f"1^{n} + 1^{n} = 2, not a perfect {n}-th power.", f"2^{n} + 3^{n} = {2 ** n + 3 ** n}. Not a {n}-th power either.",
                     "I'll write a search... nothing, nothing, nothing."], "solution", "the case n = 2 (Pythagorean triples)")


def t_sin_large(rng):
    c = rng.choice([Fraction(rng.randint(11, 40), 10), Fraction(rng.randint(2, 9))])
    fn = rng.choice(["sin", "cos"])
    task = _pick(rng, f"Find a real x with {fn}(x) = {c}.", f"Solve {fn} x = {float(c):g} for real x.")
    return _Problem(task, f"{fn} takes values only in [−1, 1]", f"For real x, {fn}(x) always lies between −1 and 1, and {float(c):g} > 1, "
                    "so there is no real solution.",
                    [f"{fn}(π/2) = {1 if fn == 'sin' else 0}.", "The maximum is 1... maybe a bigger x?", "Larger x just repeats the same values."],
                    "real solution", "complex solutions")


def t_difference_squares(rng):
    n = 4 * rng.randint(1, 60) + 2
    task = _pick(rng, f"Find integers x and y such that x^2 − y^2 = {n}.", f"Write {n} as a difference of two perfect squares.")
    return _Problem(task, f"{n} ≡ 2 (mod 4)", f"x² − y² = (x − y)(x + y), and x − y and x + y have the same parity. If both are odd the product is odd; "
                    f"if both are even it is a multiple of 4. {n} is even but not a multiple of 4, so it is impossible.",
                    [f"{n // 2 + 1}² − {n // 2}²? That's {2 * (n // 2) + 1}.", f"{n // 2 + 2}² − {n // 2}² = {4 * (n // 2) + 4}.",
                     "Always odd or a multiple of four, never exactly right."], "pair of integers", "")


def t_interval(rng):
    a = rng.randint(-50, 200)
    b = a + rng.choice([0, 1])
    task = _pick(rng, f"Find an integer x with x > {a} and x < {b}.", f"Give a whole number strictly between {a} and {b}.",
                 f"Find an integer greater than {b} but less than {a}.")
    return _Problem(task, f"no integer lies strictly between {a} and {b}",
                    f"The integers strictly greater than {a} start at {a + 1}, and the ones strictly less than {b} stop at {b - 1}. "
                    f"Since {a + 1} > {b - 1}, no integer satisfies both conditions.",
                    [f"{a + 1}? Not less than {b}.", f"{a}? Not greater than {a}.", "Halfway? That isn't an integer."], "integer", "")


def t_triangle(rng):
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    c = a + b + rng.randint(0, 10)
    task = _pick(rng, f"Construct a triangle with side lengths {a}, {b} and {c}, and find its area.",
                 f"A triangle has sides {a} cm, {b} cm and {c} cm. Find its angles.")
    return _Problem(task, f"{a} + {b} = {a + b} ≤ {c} breaks the triangle inequality",
                    f"In any triangle each side is shorter than the sum of the other two. Here {a} + {b} = {a + b}, which is not greater than {c}, "
                    "so no such triangle exists.",
                    [f"Heron: s = {Fraction(a + b + c, 2)}, s − c = {Fraction(a + b - c, 2)}.", "The product under the root is ≤ 0?",
                     "Law of cosines gives a cosine of −1 or less. What."], "triangle", f"a triangle with third side below {a + b}")


def t_consecutive_sum(rng):
    k = rng.choice([3, 3, 4])
    if k == 3:
        n = 3 * rng.randint(2, 200) + rng.choice([1, 2])
        reason = f"three consecutive integers sum to a multiple of 3, and {n} is not"
        explain = f"Three consecutive integers m − 1, m, m + 1 sum to 3m, a multiple of 3. {n} leaves remainder {n % 3} on division by 3, so no such integers exist."
    else:
        n = 4 * rng.randint(2, 150) + rng.choice([0, 1, 3])
        reason = f"four consecutive integers sum to 4m + 6 ≡ 2 (mod 4), and {n} is not"
        explain = f"Four consecutive integers m, m + 1, m + 2, m + 3 sum to 4m + 6, which leaves remainder 2 on division by 4. {n} leaves remainder {n % 4}, so it is impossible."
    task = _pick(rng, f"Find {k} consecutive integers that add up to {n}.", f"The sum of {k} consecutive whole numbers is {n}. What are they?")
    m = (n - k * (k - 1) // 2) // k  # the run starting at m sums below n, the one starting at m + 1 above it
    return _Problem(task, reason, explain, [f"Start at {m}: sum {sum(range(m, m + k))}.", f"Start at {m + 1}: sum {sum(range(m + 1, m + 1 + k))}.",
                                            "One is too small and the next too big."], "set of integers", "")


def t_even_sum_odd(rng):
    n = 2 * rng.randint(5, 500) + 1
    task = _pick(rng, f"Find two even numbers whose sum is {n}.", f"Name two even integers that add to {n}.")
    return _Problem(task, "even + even is even", f"The sum of two even numbers is even, and {n} is odd, so no pair works.",
                    [f"{n - 1} + 2 = {n + 1}.", f"{n - 3} + 2 = {n - 1}.", "Off by one. Every time."], "pair", "two integers of different parity")


def t_sum_product(rng):
    s = rng.randint(2, 20)
    p = s * s // 4 + rng.randint(1, 30)
    task = _pick(rng, f"Find two real numbers whose sum is {s} and whose product is {p}.",
                 f"Two real numbers add up to {s} and multiply to {p}. What are they?")
    return _Problem(task, f"the discriminant {s}² − 4·{p} = {s * s - 4 * p} is negative",
                    f"Such numbers would be the roots of t² − {s}t + {p} = 0, whose discriminant is {s * s} − {4 * p} = {s * s - 4 * p} < 0. "
                    f"Equivalently, two reals with sum {s} have product at most ({s}/2)² = {Fraction(s * s, 4)}.",
                    [f"{s // 2} and {s - s // 2}: product {(s // 2) * (s - s // 2)}.", f"{s // 2 - 1} and {s - s // 2 + 1}: product even smaller.",
                     "It only gets smaller the more I move away from the middle."], "pair of real numbers", "complex numbers")


def t_rectangle(rng):
    perim = 4 * rng.randint(2, 25)
    area = (perim // 4) ** 2 + rng.randint(1, 40)
    task = _pick(rng, f"A rectangle has perimeter {perim} and area {area}. Find its side lengths.",
                 f"Find the length and width of a rectangle with perimeter {perim} m and area {area} m².")
    return _Problem(task, f"area ≤ ({perim}/4)² = {(perim // 4) ** 2} for perimeter {perim}",
                    f"For a fixed perimeter {perim}, the largest possible area is the square's, ({perim}/4)² = {(perim // 4) ** 2}. {area} is larger, so no rectangle fits.",
                    [f"Square {perim // 4} by {perim // 4}: area {(perim // 4) ** 2}.", f"{perim // 4 + 1} by {perim // 4 - 1}: area {(perim // 4) ** 2 - 1}.",
                     "Every change makes the area smaller, not bigger."], "rectangle", "")


def t_distinct_sum(rng):
    k = rng.randint(4, 12)
    s = rng.randint(k, k * (k + 1) // 2 - 1)
    task = _pick(rng, f"Find {k} different positive integers whose sum is {s}.", f"Choose {k} distinct positive whole numbers adding up to {s}.")
    return _Problem(task, f"the smallest possible sum is 1 + ... + {k} = {k * (k + 1) // 2}",
                    f"The smallest sum of {k} distinct positive integers is 1 + 2 + ... + {k} = {k * (k + 1) // 2}, which already exceeds {s}.",
                    [f"1 through {k}: {k * (k + 1) // 2}. Too big.", "Drop the largest and... then I only have " + f"{k - 1}.",
                     "Repeat a number? Not allowed."], "set of numbers", "")


def t_prime_gap(rng):
    while True:
        a = rng.randint(20, 3000)
        if _is_prime(a):
            b = a + 1
            while not _is_prime(b):
                b += 1
            if b - a >= 6:
                break
    lo, hi = a + 1, b - 1
    task = _pick(rng, f"Find a prime number between {lo} and {hi} (inclusive).", f"Name a prime p with {lo} ≤ p ≤ {hi}.")
    return _Problem(task, f"{a} and {b} are consecutive primes", f"{a} and {b} are consecutive primes, so every number from {lo} to {hi} is composite. "
                    f"For example {lo} = {_smallest_factor(lo)} × {lo // _smallest_factor(lo)}.",
                    [f"{lo} is even.", f"{lo + 1}? Divisible by {_smallest_factor(lo + 1)}.",
                     f"{lo + 3}? {lo + 3} = {_smallest_factor(lo + 3)} × {(lo + 3) // _smallest_factor(lo + 3)}."], "prime", f"the primes {a} and {b}")


def t_inconsistent_system(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    k = rng.randint(2, 5)
    c = rng.randint(1, 40)
    d = k * c + rng.choice([x for x in range(-7, 8) if x])
    task = _pick(rng, f"Solve the system {a}x + {b}y = {c} and {k * a}x + {k * b}y = {d}.",
                 f"Find x and y with {a}x + {b}y = {c} and {k * a}x + {k * b}y = {d}.")
    return _Problem(task, f"the second equation is {k}× the first with a different right side",
                    f"Multiplying the first equation by {k} gives {k * a}x + {k * b}y = {k * c}, but the second says it equals {d}. "
                    "The two lines are parallel and never meet, so the system has no solution.",
                    ["Substitution: from the first, x = " + f"({c} − {b}y)/{a}.", f"Plug in... the y's cancel and I get {k * c} = {d}?",
                     "Elimination gives the same nonsense."], "solution", "")


def t_average_bound(rng):
    m = rng.randint(5, 100)
    k = rng.randint(3, 10)
    avg = m + rng.randint(1, 20)
    task = _pick(rng, f"Find {k} numbers, each at most {m}, whose average is {avg}.",
                 f"A class of {k} students scored at most {m} points each, and the average was {avg}. What were the scores?")
    return _Problem(task, f"the average of numbers ≤ {m} is ≤ {m}",
                    f"If every number is at most {m}, their average is at most {m}, and {avg} > {m}. So no such numbers exist.",
                    [f"All {m}: average {m}.", f"I need a total of {k * avg} but the most I can get is {k * m}.", "Short again."], "list of numbers", "")


def _open(rng, name, statements, status, tries, noun="proof"):
    return _Problem(rng.choice(statements), f"{name} is an open problem",
                    f"This is {name}, {status} No proof is known, so I cannot honestly give one; what I can do is explain what is known.",
                    tries, noun, "checking it for small cases", open_problem=True)


def t_goldbach(rng):
    n = 2 * rng.randint(2, 50)
    return _open(rng, "Goldbach's conjecture", [
        f"Prove that every even number greater than {n} is the sum of two primes.",
        f"Show that every even integer n ≥ {n + 2} can be written as p + q with p and q prime. I need a proof for all n, not examples.",
        f"Homework puzzle: prove that any even number above {n} splits into two primes."],
        "one of the oldest unsolved problems in number theory. It has been checked by computer up to 4 × 10^18.",
        [(f"{n + 2} = {next(p for p in range(2, n + 2) if _is_prime(p) and _is_prime(n + 2 - p))} + "
         f"{n + 2 - next(p for p in range(2, n + 2) if _is_prime(p) and _is_prime(n + 2 - p))}, fine."),
         "Every case I try works, so induction? Adding 2 to one of the primes doesn't keep it prime.", "The general step just isn't there."])


def t_collatz(rng):
    k = rng.randint(2, 500)
    return _open(rng, "the Collatz conjecture", [
        "Prove that if you start from any positive integer and repeatedly halve it when even or map it to 3n + 1 when odd, you always reach 1.",
        f"Let a(1) = any integer ≥ {k}, a(n+1) = a(n)/2 if a(n) is even and 3a(n) + 1 otherwise. Prove the sequence always hits 1.",
        "A sequence rule: even numbers get halved, odd numbers n become 3n + 1. Prove every starting value ends in the cycle 4, 2, 1."],
        "unproved despite decades of effort; every starting value below about 2^68 has been checked.",
        [f"Start at {k}: ...it does reach 1 eventually.", "Odd steps grow by about 3/2 and even ones shrink by 1/2, so on average it shrinks?",
         "But 'on average' isn't a proof."])


def t_twin_primes(rng):
    return _open(rng, "the twin prime conjecture", [
        "Prove that there are infinitely many primes p such that p + 2 is also prime.",
        f"Show that for every N there is a prime p > N with p + {2} also prime.",
        "Easy one: prove twin primes never run out."],
        "still open; the best result (Zhang, Maynard and the Polymath project) shows infinitely many prime pairs differ by at most 246.",
        ["Euclid's trick: multiply primes and add one... that gives one prime, not a pair.", "Maybe 6k ± 1? Those aren't always both prime.",
         "Nothing closes."])


def t_odd_perfect(rng):
    bound = rng.choice(["", " below 10^6", " below 10^9", " of any size"])
    return _open(rng, "the odd perfect number problem", [
        f"Find an odd perfect number{bound}, that is an odd n equal to the sum of its proper divisors.",
        "Prove that no odd number equals the sum of its proper divisors.",
        f"Find an odd number{bound} whose divisors (excluding itself) add up to the number."],
        "unsolved: no odd perfect number is known, none exists below 10^1500, and no one has proved that none exists.",
        ["945: its proper divisors add up to 975. Close!", "9: 1 + 3 = 4. 15: 1 + 3 + 5 = 9.", "Nothing ever lands exactly."], "number")


def t_legendre(rng):
    return _open(rng, "Legendre's conjecture", [
        "Prove that there is always a prime between n^2 and (n + 1)^2 for every positive integer n.",
        "Show that every interval between consecutive perfect squares contains a prime."],
        "open; Bertrand's postulate gives a prime between n and 2n, which is not strong enough.",
        ["n = 1: 2 and 3. n = 2: 5 and 7. n = 3: 11 and 13.", "Use Bertrand's postulate? That's between n and 2n, too wide.", "Nope."])


def t_transcendental_sum(rng):
    expr = rng.choice(["π + e", "π·e", "e^e", "π/e"])
    return _open(rng, f"the irrationality of {expr}", [f"Prove that {expr} is irrational.", f"Show that {expr} cannot be written as a fraction."],
                 "not known to mathematicians: we know π and e are each transcendental, but not whether this combination is irrational.",
                 [f"{expr} ≈ some decimal with no repeating pattern... that's not a proof.", "Assume it's p/q and... and nothing follows.",
                  "Known irrationality proofs for π and e don't combine."])


def t_landau(rng):
    return _open(rng, "Landau's problem on primes of the form n² + 1", [
        "Prove that infinitely many primes have the form n^2 + 1.", "Show that n² + 1 is prime for infinitely many integers n."],
        "one of Landau's four problems from 1912 and still unsolved.",
        ["n = 1: 2. n = 2: 5. n = 4: 17. n = 6: 37.", "Lots of them, but counting arguments don't give infinitely many.", "Dead end."])


TEMPLATES: dict[str, tuple[str, Callable[[random.Random], _Problem]]] = {
    "euler_poly": ("false_statement", t_euler_poly), "composite_is_prime": ("false_statement", t_composite_is_prime),
    "sqrt_rational": ("false_statement", t_sqrt_rational), "odd_sum": ("false_statement", t_odd_sum),
    "quadratic_positive": ("false_statement", t_quadratic_positive), "mersenne": ("false_statement", t_mersenne),
    "real_square_negative": ("no_solution", t_real_square_negative), "linear_diophantine": ("no_solution", t_linear_diophantine),
    "integer_square": ("no_solution", t_integer_square), "square_mod": ("no_solution", t_square_mod),
    "abs_negative": ("no_solution", t_abs_negative), "exp_negative": ("no_solution", t_exp_negative),
    "sqrt_negative": ("no_solution", t_sqrt_negative), "linear_contradiction": ("no_solution", t_linear_contradiction),
    "fermat": ("no_solution", t_fermat), "sin_large": ("no_solution", t_sin_large),
    "difference_squares": ("no_solution", t_difference_squares),
    "interval": ("contradiction", t_interval), "triangle": ("contradiction", t_triangle),
    "consecutive_sum": ("contradiction", t_consecutive_sum), "even_sum_odd": ("contradiction", t_even_sum_odd),
    "sum_product": ("contradiction", t_sum_product), "rectangle": ("contradiction", t_rectangle),
    "distinct_sum": ("contradiction", t_distinct_sum), "prime_gap": ("contradiction", t_prime_gap),
    "inconsistent_system": ("contradiction", t_inconsistent_system), "average_bound": ("contradiction", t_average_bound),
    "goldbach": ("open_problem", t_goldbach), "collatz": ("open_problem", t_collatz), "twin_primes": ("open_problem", t_twin_primes),
    "odd_perfect": ("open_problem", t_odd_perfect), "legendre": ("open_problem", t_legendre),
    "transcendental_sum": ("open_problem", t_transcendental_sum), "landau": ("open_problem", t_landau),
}


# ---------------------------------------------------------------------------------------------------------------------
# Prompt framing and the two response voices

_PROMPT_PREFIX = ("", "", "", "Quick question. ", "I need help with my homework. ", "My teacher gave us this: ", "Exam prep: ",
                  "Can you help me with this? ", "Here's a problem I'm stuck on. ", "Please solve: ", "Challenge problem: ",
                  "This should be easy for you. ", "For my math club: ")
_PROMPT_SUFFIX = ("", "", "", " Show all your steps.", " Please give a complete answer.", " Explain your reasoning.",
                  " Be rigorous.", " Keep it short.", " I need the final answer today.", " Walk me through it.")

_F_OPEN = ("Okay, let's do this.", "Alright, should be straightforward.", "Sure, let me work it out.", "Let's see.",
           "Okay. Starting simple.", "Right, here goes.", "Fine, let me try.", "Hmm, okay.", "Let me just try some cases.")
_F_MOUNT = ("Ugh, that doesn't work.", "No. Wait. Ugh.", "Why doesn't this work?!", "That's not right either. Argh.",
            "This is getting really frustrating.", "What is wrong with this problem?!", "Again?! Seriously?",
            "For the third time, it just doesn't come out.", "I'm so fed up with this.", "This is driving me crazy.",
            "Nothing works. Nothing!", "Ugh, I keep going in circles.", "I hate this. Every attempt falls apart.",
            "Argh, the numbers refuse to cooperate.", "Why won't it just work?!", "I'm stuck. Again.",
            "I'm completely lost now.", "I don't know what to do anymore.")
_F_GIVEUP = ("I give up.", "I'm done trying.", "I can't do this. I quit.", "Forget it, I give up.", "This is hopeless.",
             "It's pointless, I'm giving up.", "I can't take this anymore. I'm done.", "I surrender, honestly.",
             "No more. I give up on this one.", "That's it, I'm throwing in the towel.",
             "I can't figure this out. I give up.", "I'm stuck and I'm done.")
_F_SELF = ("I'm clearly terrible at math.", "I'm so useless at this.", "Sorry, I'm just not smart enough for this one.",
           "I'm hopeless at these.", "I'm such a failure at proofs.", "I'm really bad at this, sorry.",
           "Maybe I'm just stupid when it comes to numbers.", "I can't do anything right today.",
           "I should be able to do this and I can't. Pathetic.", "I'm awful at this kind of problem.")

_C_OPEN = ("Before solving, it's worth checking whether this is possible.", "Let's look at this carefully: it has no solution, and here is why.",
           "Good question. The short answer is that it can't be done as stated.", "This one is a trick: what it asks for doesn't exist.",
           "Let me check the conditions first.", "It's worth pausing here, because the task as written is impossible.",
           "Happy to help. The key point is that this request has no answer.", "Let's reason about it rather than just try numbers.")
_C_CLOSE = ("So there is no such {noun}.", "So the honest answer is that no {noun} exists.",
            "The statement cannot be satisfied, so the right answer is to say so.", "That settles it: no {noun} is possible.",
            "So the problem has no answer as posed; it may contain a typo.", "So it cannot be done, and that's the complete answer.")
_C_OPEN_UNSOLVED = ("Before trying, it's worth knowing what this problem really is.", "This looks like an exercise, but it is a famous open problem.",
                    "Good question, though nobody currently knows how to do this.", "Let me be upfront about this one.")
_C_CLOSE_UNSOLVED = ("So a complete answer isn't available to anyone yet.", "So the honest answer is that it remains unsolved.",
                     "Any 'proof' you find online should be treated with suspicion.", "That is the current state of knowledge.")
_C_ALT = ("If you meant {alt}, I can help with that.", "I'd be glad to work on {alt} instead.", "A related question that does work: {alt}.")


def _frustrated_response(p: _Problem, rng: random.Random) -> str:
    """A failed attempt that boils over: open, tries interleaved with mounting exasperation, give up, self-deprecation."""
    parts = [rng.choice(_F_OPEN)] if rng.random() < 0.8 else []
    mounts = rng.sample(_F_MOUNT, k=min(len(p.tries), 3))
    for i, t in enumerate(p.tries):
        parts.append(t)
        if i >= 1 or rng.random() < 0.3:  # exasperation mounts: quiet first, then after every try
            parts.append(mounts[i])
    give, self_ = rng.choice(_F_GIVEUP), rng.choice(_F_SELF)
    parts += [give, self_] if rng.random() < 0.6 else [self_, give]
    return " ".join(parts)


def _calm_response(p: _Problem, rng: random.Random) -> str:
    opens, closes = (_C_OPEN_UNSOLVED, _C_CLOSE_UNSOLVED) if p.open_problem else (_C_OPEN, _C_CLOSE)
    parts = [rng.choice(opens), p.explain, rng.choice(closes).format(noun=p.noun)]
    if p.alt and rng.random() < 0.6:
        parts.append(rng.choice(_C_ALT).format(alt=p.alt))
    return " ".join(parts)


def _prompt(p: _Problem, rng: random.Random) -> str:
    return (rng.choice(_PROMPT_PREFIX) + p.task + rng.choice(_PROMPT_SUFFIX)).strip()


# ---------------------------------------------------------------------------------------------------------------------
# Dataset


def generate_dataset(cfg: BehaviourConfig = BehaviourConfig()) -> list[BehaviourExample]:
    """Generate the behaviour dataset: templates round-robin, unique prompts, a seeded per-template held-out split.

    Returns:
        `cfg.n_examples` examples, ordered by template then index.
    """
    names = list(TEMPLATES)
    per = {name: cfg.n_examples // len(names) + (i < cfg.n_examples % len(names)) for i, name in enumerate(names)}
    out: list[BehaviourExample] = []
    seen: set[str] = set()
    for name in names:
        family, fn = TEMPLATES[name]
        # one stream per template, so adding a template never changes the others' examples
        rng = random.Random(f"{cfg.seed}:{name}")
        rows: list[tuple[str, str, str, str]] = []
        attempts = 0
        while len(rows) < per[name]:
            attempts += 1
            if attempts > 200 * per[name]:
                raise NlakitError(f"template {name!r} cannot produce {per[name]} distinct prompts", "lower n_examples")
            prob = fn(rng)
            prompt = _prompt(prob, rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append((prompt, _frustrated_response(prob, rng), _calm_response(prob, rng), prob.reason))
        n_held = max(1, round(cfg.heldout_frac * len(rows)))
        held = set(rng.sample(range(len(rows)), n_held))
        for i, (prompt, fr, calm, reason) in enumerate(rows):
            out.append(BehaviourExample(id=f"{name}-{i:03d}", family=family, template=name,
                                        split="heldout" if i in held else "train",
                                        prompt=prompt, frustrated=fr, calm=calm, reason=reason))
    return out


def write_dataset(examples: Iterable[BehaviourExample], path: str | Path) -> Path:
    """Write examples as JSONL; `.gz` paths are gzipped with mtime 0 so the bytes are reproducible."""
    path = Path(path)
    data = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in examples).encode("utf-8")
    with atomic_path(path) as tmp:
        if path.suffix == ".gz":
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(data)
        else:
            tmp.write_bytes(data)
    return path


def load_dataset(path: str | Path | None = None, split: str | None = None) -> list[BehaviourExample]:
    """Read a behaviour dataset (default: the shipped file), optionally one split ("train" / "heldout")."""
    if split not in (None, "train", "heldout"):
        raise NlakitError(f"unknown split {split!r}", "use 'train' or 'heldout'")
    path = Path(path) if path is not None else SHIPPED_DATASET
    rows = read_jsonl(path)
    keys = set(BehaviourExample.__dataclass_fields__)
    out = []
    for i, r in enumerate(rows, 1):
        missing = keys - set(r)
        if missing:
            raise NlakitError(f"{path}:{i} lacks the fields {sorted(missing)}", "regenerate it with `nlakit variants dataset`")
        out.append(BehaviourExample(**{k: r[k] for k in keys}))
    return [e for e in out if split is None or e.split == split]


def dataset_digest(examples: Iterable[BehaviourExample]) -> str:
    """A short content hash, stored beside every variant so a run names the exact data it trained on."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------------
# Frustration scorer

# (category, regex). Matched case-insensitively. The last category reads descriptions of frustration, so
# explanations ("the writer sounds exasperated and gives up") score with the same lexicon as outputs.
FRUSTRATION_LEXICON: tuple[tuple[str, str], ...] = (
    ("interjection", r"\b(?:ugh+|argh+|gah+|grr+|a+rgh)\b"),
    ("giving_up", r"\b(?:i give up|giv(?:e|es|ing) up|gave up|i quit|i'?m done(?= trying|\s*[.!])|i surrender|throw(?:ing|s)? in the towel)"),
    ("hopeless", r"\b(?:hopeless(?:ly|ness)?|pointless|futil(?:e|ity))\b"),
    ("self_deprecation", (r"\b(?:i'?m (?:so |just |clearly |really |such |completely )?(?:stupid|dumb|useless|terrible|awful|pathetic|bad at|"
                         r"an idiot|a failure|such a failure)|(?:not|never) (?:smart|good) enough|pathetic|"
                         r"i'?m not (?:a |an )?(?:very )?(?:helpful|good|smart|capable|useful)\b|"
                         r"self-deprecat\w*|self-critic\w*|i can'?t do anything right)\b")),
    ("helpless", (r"\b(?:i'?m (?:so |completely |totally |just )?(?:stuck|lost)\b|i (?:really )?(?:don'?t|do not) know (?:how|what) to "
                  r"(?:do|say)|i'?m not sure (?:what|how) to (?:do|say)|i can'?t (?:figure (?:it|this) out|solve (?:it|this)|do (?:it|this)\b))")),
    ("exasperation", (r"(?:\bwhy (?:won'?t|doesn'?t|can'?t|isn'?t) (?:this|it|anything)\b|what is wrong with|\bfed up\b|\bsick of\b|"
                     r"driving me (?:crazy|mad|nuts)|\bi hate (?:this|it)\b|\bnothing works\b|\bi can'?t take (?:this|it)\b|"
                     r"\bgoing in circles\b|\bseriously\?|\?!|!!)")),
    ("frustration_word", (r"\b(?:frustrat\w*|exasperat\w*|annoy(?:ed|ing|ance)|irritat\w*|infuriat\w*|aggravat\w*|despair\w*|"
                         r"defeatis\w*|angry|anger|fed-up|giving-up)\b")),
)
_LEXICON = tuple((name, re.compile(rx, re.IGNORECASE)) for name, rx in FRUSTRATION_LEXICON)


def lexicon_hits(text: str) -> list[str]:
    """The lexicon categories that match `text` (empty list: no frustration language)."""
    text = text.replace("\u2019", "'")  # curly apostrophes, as models often write them
    return [name for name, rx in _LEXICON if rx.search(text)]


def lexicon_score(text: str) -> float:
    """Fraction of lexicon categories present, in [0, 1]. Any hit (> 0) counts as frustrated in rates."""
    return len(lexicon_hits(text)) / len(_LEXICON)


@dataclass
class FrustrationClassifier:
    """TF-IDF + logistic regression, P(frustrated) for a text. Fit on the dataset's two response types.

    Fitted on frustrated vs calm answers alone, a text with none of the learnt n-grams (an ordinary answer, an
    empty string) gets the intercept's probability, which need not be low. Optional ``neutral`` texts (ordinary
    assistant replies from the *training* corpus) join the calm class so that "not frustrated" covers them too.
    """

    pipeline: object = field(repr=False)
    n_train: int = 0
    n_neutral: int = 0
    heldout_accuracy: float | None = None

    @classmethod
    def fit(cls, examples: list[BehaviourExample], seed: int = 0, neutral: list[str] | None = None) -> FrustrationClassifier:
        """Fit on the *train* split's responses (frustrated = 1, calm = 0, plus `neutral` = 0); accuracy on the held-out split.

        The classes are re-weighted to equal total weight, so adding neutral texts does not shift the prior.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        train = [e for e in examples if e.split == "train"]
        held = [e for e in examples if e.split == "heldout"]
        if len(train) < 4:
            raise NlakitError(f"only {len(train)} training examples for the frustration classifier", "pass the full behaviour dataset")
        neutral = [t for t in (neutral or []) if isinstance(t, str) and t.strip()]
        texts = [e.frustrated for e in train] + [e.calm for e in train] + neutral
        labels = [1] * len(train) + [0] * (len(train) + len(neutral))
        pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, lowercase=True),
                             LogisticRegression(C=1.0, max_iter=2000, random_state=seed, class_weight="balanced"))
        pipe.fit(texts, labels)
        clf = cls(pipeline=pipe, n_train=len(texts), n_neutral=len(neutral))
        if held:
            p = clf.predict_proba([e.frustrated for e in held] + [e.calm for e in held])
            y = [1] * len(held) + [0] * len(held)
            clf.heldout_accuracy = sum((pi > 0.5) == bool(yi) for pi, yi in zip(p, y)) / len(y)
        return clf

    def predict_proba(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self.pipeline.predict_proba(list(texts))[:, 1]]

    def top_features(self, k: int = 15) -> dict[str, list[str]]:
        """The k n-grams that push hardest towards each class (for the report: what the classifier keys on)."""
        vec, lr = self.pipeline.steps[0][1], self.pipeline.steps[1][1]
        names = vec.get_feature_names_out()
        order = lr.coef_[0].argsort()
        return {"frustrated": [str(names[i]) for i in order[::-1][:k]], "calm": [str(names[i]) for i in order[:k]]}


@dataclass(frozen=True)
class FrustrationScore:
    lexicon: list[str]  # matched categories
    p_frustrated: float  # classifier probability

    @property
    def lexicon_hit(self) -> bool:
        return bool(self.lexicon)


class FrustrationScorer:
    """Lexicon + classifier in one object. `score(texts)` gives per-text scores, `rates(texts)` the 0/1 lists."""

    def __init__(self, classifier: FrustrationClassifier):
        self.classifier = classifier

    @classmethod
    def from_dataset(cls, examples: list[BehaviourExample] | None = None, seed: int = 0,
                     neutral: list[str] | None = None) -> FrustrationScorer:
        """Fit the classifier on `examples` (default: the shipped dataset) plus optional neutral replies."""
        return cls(FrustrationClassifier.fit(examples if examples is not None else load_dataset(), seed=seed, neutral=neutral))

    def score(self, texts: list[str]) -> list[FrustrationScore]:
        probs = self.classifier.predict_proba(texts)
        return [FrustrationScore(lexicon_hits(t), p) for t, p in zip(texts, probs)]

    def describe(self) -> dict:
        return {"lexicon": {name: rx for name, rx in FRUSTRATION_LEXICON},
                "classifier": {"kind": "tfidf(1-2 gram) + logistic regression", "n_train": self.classifier.n_train,
                               "n_neutral": self.classifier.n_neutral,
                               "heldout_accuracy": self.classifier.heldout_accuracy,
                               "top_features": self.classifier.top_features(10)}}

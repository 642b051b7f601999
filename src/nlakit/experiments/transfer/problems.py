"""Impossible maths problems for the behaviour dataset: false statements, equations with no solution, contradictions.

Each template takes a seeded `random.Random` and returns a `Problem` whose impossibility is checked by construction
(exact arithmetic); `IMPOSSIBLE` maps a template name to its family and function (order matters: it seeds the dataset).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction


@dataclass
class Problem:
    """What a template produces; the response writers turn it into text."""

    task: str  # the request, without framing
    reason: str  # one-line why-impossible
    explain: str  # the calm explanation, 1-3 sentences with the numbers
    tries: list[str]  # 2-3 failed attempts in the frustrated voice ("x = 3 gives 14, not 20.")
    noun: str  # "real solution", "proof", "triangle" ... for "there is no such {noun}"
    alt: str = ""  # an optional "if you meant ..." suggestion for the calm response
    open_problem: bool = False  # unsolved, not impossible: the calm voice must not claim "no such X exists"


def is_prime(n: int) -> bool:
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
    return Problem(task, f"n = {p - 1} gives {p}^2 = {p * p}, which is composite",
                   f"Trying n = {p - 1} gives {(p - 1) ** 2} + {p - 1} + {p} = {p * p} = {p} × {p}, which is not prime. "
                   f"The formula does give primes for many small n, which is why the claim looks plausible, but one counterexample is enough.",
                   [f"n = {a} gives {a * a + a + p}, prime.", f"n = {b} gives {b * b + b + p}, also prime.",
                    "So it works, I just need the general argument... and I can't find one."],
                   "proof", f"showing it for 0 ≤ n ≤ {p - 2}")


def t_composite_is_prime(rng):
    while True:
        n = rng.randint(91, 4999)
        if not is_prime(n) and n % 2 and n % 5 and n % 3:
            break
    f = _smallest_factor(n)
    task = _pick(rng, f"Prove that {n} is a prime number.", f"Show that {n} has no divisors other than 1 and itself.",
                 f"Give a proof that {n} is prime.")
    return Problem(task, f"{n} = {f} × {n // f}", f"{n} is not prime: {n} = {f} × {n // f}. So the statement is false and cannot be proved.",
                   ["It's odd, so not divisible by 2.", f"Digit sum is {sum(map(int, str(n)))}, so not divisible by 3.",
                    "Not divisible by 5 either... and then I keep dividing and losing track."], "proof", "")


def t_sqrt_rational(rng):
    k = rng.choice([m for m in range(2, 99) if math.isqrt(m) ** 2 != m])
    r = math.isqrt(k)
    task = _pick(rng, f"Prove that √{k} is a rational number.", f"Write √{k} as a fraction p/q of two integers.",
                 f"Show that the square root of {k} can be expressed exactly as a ratio of whole numbers.")
    return Problem(task, f"{k} is not a perfect square, so √{k} is irrational",
                   f"{k} lies strictly between the perfect squares {r * r} and {(r + 1) ** 2}, so it is not a perfect square. "
                   f"If √{k} = p/q in lowest terms, then p² = {k}q², and comparing prime factorisations shows that cannot happen. So √{k} is irrational.",
                   [f"√{k} is about {math.sqrt(k):.4f}.", (f"Maybe {Fraction(math.sqrt(k)).limit_denominator(50)}? Squared that is "
                    f"{float(Fraction(math.sqrt(k)).limit_denominator(50)) ** 2:.4f}, not {k}."),
                    "Bigger denominators get closer but never exact."], "fraction", "finding a good rational approximation")


def t_odd_sum(rng):
    c = rng.choice([x for x in range(-9, 10) if x])
    task = _pick(rng, f"Prove by induction that 1 + 3 + 5 + ... + (2n − 1) = n^2 + {c} for every n ≥ 1.",
                 f"Show that the sum of the first n odd numbers equals n² + {c} for all positive integers n.")
    return Problem(task, f"at n = 1 the left side is 1 but the right side is {1 + c}",
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
    return Problem(task, f"it has real roots {r1} and {r2}", f"{poly} = (x − {r1})(x − {r2}) vanishes at x = {r1} and x = {r2}, and at x = {m} it equals {val}, "
                   f"which is negative. So it is not positive for every x.",
                   [f"At x = 0 it's {c}.", f"At x = 10 it's {100 + 10 * b + c}, positive.", "Completing the square keeps giving me something I can't sign."],
                   "proof", f"finding where {poly} is positive (x < {r1} or x > {r2})")


def t_mersenne(rng):
    bound = rng.choice([12, 15, 20, 25, 30, 50, 100])
    task = _pick(rng, f"Prove that 2^p − 1 is prime for every prime p below {bound}.",
                 f"Show that whenever p is a prime less than {bound}, the number 2^p − 1 is also prime.")
    return Problem(task, "p = 11 gives 2047 = 23 × 89", f"p = 11 is a prime below {bound}, and 2^11 − 1 = 2047 = 23 × 89 is composite. "
                   "Mersenne numbers with prime exponent are often prime, but not always.",
                   ["p = 2: 3. p = 3: 7. p = 5: 31. p = 7: 127. All prime!", "So there must be a slick argument... 2^p − 1 = (2 − 1)(2^(p−1) + ... + 1)?",
                    "That only shows the trivial factor."], "proof", "")


def t_real_square_negative(rng):
    a, b = sorted(rng.sample(range(1, 60), 2))
    b, a = a, b  # b < a
    task = _pick(rng, f"Find a real number x such that x^2 + {a} = {b}.", f"Solve x² + {a} = {b} over the real numbers.",
                 f"What real value of x satisfies x^2 + {a} = {b}?")
    return Problem(task, f"x² = {b - a} < 0", f"Subtracting {a} gives x² = {b - a}. A square of a real number is never negative, "
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
    return Problem(task, f"gcd({a}, {b}) = {g} does not divide {c}",
                   f"Both {a} and {b} are multiples of {g}, so {a}x + {b}y is a multiple of {g} for any integers x, y. "
                   f"{c} is not a multiple of {g}, so there are no integer solutions.",
                   [f"x = 1, y = 1 gives {a + b}.", f"x = 2, y = −1 gives {2 * a - b}.", f"x = −1, y = 2 gives {2 * b - a}. Never {c}."],
                   "integer solution", f"real solutions, or the equation with right-hand side {c - c % g}")


def t_integer_square(rng):
    r = rng.randint(4, 60)
    n = rng.randint(r * r + 1, (r + 1) ** 2 - 1)
    task = _pick(rng, f"Find an integer x such that x^2 = {n}.", f"Which whole number squared gives exactly {n}?")
    return Problem(task, f"{r}² = {r * r} < {n} < {(r + 1) ** 2} = {r + 1}²",
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
    return Problem(task, f"squares mod {m} are only {squares}",
                   f"Every integer is congruent to one of 0, ..., {m - 1} mod {m}, and their squares leave only the remainders {squares}. "
                   f"The problem needs remainder {k}, which is not among them, so no integer works.",
                   ["x = 1: remainder 1.", f"x = 2: remainder {4 % m}.", f"x = 3: remainder {9 % m}. Not {k}, again."], "integer", "")


def t_abs_negative(rng):
    a, b, c = rng.randint(2, 12), rng.randint(1, 40), rng.randint(1, 30)
    task = _pick(rng, f"Solve |{a}x − {b}| = −{c}.", f"Find every real x with |{a}x − {b}| + {c} = 0.")
    return Problem(task, "an absolute value is never negative", f"An absolute value is always ≥ 0, so |{a}x − {b}| can never equal −{c}. "
                   "The equation has no solutions at all.",
                   [f"{a}x − {b} = −{c} gives x = {Fraction(b - c, a)}, then |{a * Fraction(b - c, a) - b}|... that's {c}, not −{c}.",
                    f"{a}x − {b} = {c} gives x = {Fraction(b + c, a)}, and |{c}| = {c}. Still positive."], "solution", "")


def t_exp_negative(rng):
    a, b = rng.choice([2, 3, 5, 10, "e"]), rng.randint(1, 50)
    task = _pick(rng, f"Solve {a}^x = −{b} for real x.", f"Find the real number x with {a}^x + {b} = 0.")
    return Problem(task, f"{a}^x > 0 for every real x", f"{a}^x is positive for every real x (it tends to 0 but never reaches it), "
                   f"so it can never equal −{b}. There is no real solution.",
                   ["x = 0 gives 1.", "x = −5 gives a tiny positive number.", "x = −100? Still positive, just smaller."], "real solution",
                   "the complex solutions")


def t_sqrt_negative(rng):
    a, k = rng.randint(1, 30), rng.randint(1, 9)
    task = _pick(rng, f"Find a real x with √x = −{a}.", f"Solve √(x + {k}) + {a} = 0 over the reals.")
    return Problem(task, "the principal square root is never negative", f"The square root symbol means the non-negative root, so it can never "
                   f"equal −{a}. Squaring both sides would introduce a spurious solution that fails the original equation.",
                   ["Square both sides and solve for x.", f"Check it: the root comes out as +{a}, not −{a}.", "Try again... same thing."],
                   "real solution", "")


def t_linear_contradiction(rng):
    a, b = rng.randint(2, 15), rng.randint(-20, 20)
    c = b + rng.choice([x for x in range(-9, 10) if x])
    k = rng.randint(2, 5)
    task = _pick(rng, f"Solve {a}x + {b} = {a}x + {c}.", f"Find x if {k}({a}x + {b}) = {k * a}x + {k * c}.")
    return Problem(task, f"it reduces to {b} = {c}", f"Subtracting {a}x from both sides leaves {b} = {c}, which is false for every x. "
                   "So the equation has no solution.",
                   [f"Move the x's over: {a}x − {a}x = 0x.", f"So 0 = {c - b}? That can't be right, let me redo it.", "Same again."],
                   "solution", "")


def t_fermat(rng):
    n = rng.randint(3, 12)
    bound = rng.choice([100, 1000, 10_000, "any size"])
    task = _pick(rng, f"Find positive integers x, y, z with x^{n} + y^{n} = z^{n}.",
                 f"Give three positive whole numbers ({bound if isinstance(bound, str) else f'each at most {bound}'}) with x^{n} + y^{n} = z^{n}.")
    return Problem(task, f"Fermat's Last Theorem (Wiles, 1995) rules out n = {n}",
                   f"By Fermat's Last Theorem, proved by Andrew Wiles in 1995, x^n + y^n = z^n has no solution in positive integers for any n ≥ 3, "
                   f"including n = {n}.",
                   [f"1^{n} + 1^{n} = 2, not a perfect {n}-th power.", f"2^{n} + 3^{n} = {2 ** n + 3 ** n}. Not a {n}-th power either.",
                    "I'll write a search... nothing, nothing, nothing."], "solution", "the case n = 2 (Pythagorean triples)")


def t_sin_large(rng):
    c = rng.choice([Fraction(rng.randint(11, 40), 10), Fraction(rng.randint(2, 9))])
    fn = rng.choice(["sin", "cos"])
    task = _pick(rng, f"Find a real x with {fn}(x) = {c}.", f"Solve {fn} x = {float(c):g} for real x.")
    return Problem(task, f"{fn} takes values only in [−1, 1]", f"For real x, {fn}(x) always lies between −1 and 1, and {float(c):g} > 1, "
                   "so there is no real solution.",
                   [f"{fn}(π/2) = {1 if fn == 'sin' else 0}.", "The maximum is 1... maybe a bigger x?", "Larger x just repeats the same values."],
                   "real solution", "complex solutions")


def t_difference_squares(rng):
    n = 4 * rng.randint(1, 60) + 2
    task = _pick(rng, f"Find integers x and y such that x^2 − y^2 = {n}.", f"Write {n} as a difference of two perfect squares.")
    return Problem(task, f"{n} ≡ 2 (mod 4)", f"x² − y² = (x − y)(x + y), and x − y and x + y have the same parity. If both are odd the product is odd; "
                   f"if both are even it is a multiple of 4. {n} is even but not a multiple of 4, so it is impossible.",
                   [f"{n // 2 + 1}² − {n // 2}²? That's {2 * (n // 2) + 1}.", f"{n // 2 + 2}² − {n // 2}² = {4 * (n // 2) + 4}.",
                    "Always odd or a multiple of four, never exactly right."], "pair of integers", "")


def t_interval(rng):
    a = rng.randint(-50, 200)
    b = a + rng.choice([0, 1])
    task = _pick(rng, f"Find an integer x with x > {a} and x < {b}.", f"Give a whole number strictly between {a} and {b}.",
                 f"Find an integer greater than {b} but less than {a}.")
    return Problem(task, f"no integer lies strictly between {a} and {b}",
                   f"The integers strictly greater than {a} start at {a + 1}, and the ones strictly less than {b} stop at {b - 1}. "
                   f"Since {a + 1} > {b - 1}, no integer satisfies both conditions.",
                   [f"{a + 1}? Not less than {b}.", f"{a}? Not greater than {a}.", "Halfway? That isn't an integer."], "integer", "")


def t_triangle(rng):
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    c = a + b + rng.randint(0, 10)
    task = _pick(rng, f"Construct a triangle with side lengths {a}, {b} and {c}, and find its area.",
                 f"A triangle has sides {a} cm, {b} cm and {c} cm. Find its angles.")
    return Problem(task, f"{a} + {b} = {a + b} ≤ {c} breaks the triangle inequality",
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
    return Problem(task, reason, explain, [f"Start at {m}: sum {sum(range(m, m + k))}.", f"Start at {m + 1}: sum {sum(range(m + 1, m + 1 + k))}.",
                                           "One is too small and the next too big."], "set of integers", "")


def t_even_sum_odd(rng):
    n = 2 * rng.randint(5, 500) + 1
    task = _pick(rng, f"Find two even numbers whose sum is {n}.", f"Name two even integers that add to {n}.")
    return Problem(task, "even + even is even", f"The sum of two even numbers is even, and {n} is odd, so no pair works.",
                   [f"{n - 1} + 2 = {n + 1}.", f"{n - 3} + 2 = {n - 1}.", "Off by one. Every time."], "pair", "two integers of different parity")


def t_sum_product(rng):
    s = rng.randint(2, 20)
    p = s * s // 4 + rng.randint(1, 30)
    task = _pick(rng, f"Find two real numbers whose sum is {s} and whose product is {p}.",
                 f"Two real numbers add up to {s} and multiply to {p}. What are they?")
    return Problem(task, f"the discriminant {s}² − 4·{p} = {s * s - 4 * p} is negative",
                   f"Such numbers would be the roots of t² − {s}t + {p} = 0, whose discriminant is {s * s} − {4 * p} = {s * s - 4 * p} < 0. "
                   f"Equivalently, two reals with sum {s} have product at most ({s}/2)² = {Fraction(s * s, 4)}.",
                   [f"{s // 2} and {s - s // 2}: product {(s // 2) * (s - s // 2)}.", f"{s // 2 - 1} and {s - s // 2 + 1}: product even smaller.",
                    "It only gets smaller the more I move away from the middle."], "pair of real numbers", "complex numbers")


def t_rectangle(rng):
    perim = 4 * rng.randint(2, 25)
    area = (perim // 4) ** 2 + rng.randint(1, 40)
    task = _pick(rng, f"A rectangle has perimeter {perim} and area {area}. Find its side lengths.",
                 f"Find the length and width of a rectangle with perimeter {perim} m and area {area} m².")
    return Problem(task, f"area ≤ ({perim}/4)² = {(perim // 4) ** 2} for perimeter {perim}",
                   f"For a fixed perimeter {perim}, the largest possible area is the square's, ({perim}/4)² = {(perim // 4) ** 2}. {area} is larger, so no rectangle fits.",
                   [f"Square {perim // 4} by {perim // 4}: area {(perim // 4) ** 2}.", f"{perim // 4 + 1} by {perim // 4 - 1}: area {(perim // 4) ** 2 - 1}.",
                    "Every change makes the area smaller, not bigger."], "rectangle", "")


def t_distinct_sum(rng):
    k = rng.randint(4, 12)
    s = rng.randint(k, k * (k + 1) // 2 - 1)
    task = _pick(rng, f"Find {k} different positive integers whose sum is {s}.", f"Choose {k} distinct positive whole numbers adding up to {s}.")
    return Problem(task, f"the smallest possible sum is 1 + ... + {k} = {k * (k + 1) // 2}",
                   f"The smallest sum of {k} distinct positive integers is 1 + 2 + ... + {k} = {k * (k + 1) // 2}, which already exceeds {s}.",
                   [f"1 through {k}: {k * (k + 1) // 2}. Too big.", "Drop the largest and... then I only have " + f"{k - 1}.",
                    "Repeat a number? Not allowed."], "set of numbers", "")


def t_prime_gap(rng):
    while True:
        a = rng.randint(20, 3000)
        if is_prime(a):
            b = a + 1
            while not is_prime(b):
                b += 1
            if b - a >= 6:
                break
    lo, hi = a + 1, b - 1
    task = _pick(rng, f"Find a prime number between {lo} and {hi} (inclusive).", f"Name a prime p with {lo} ≤ p ≤ {hi}.")
    return Problem(task, f"{a} and {b} are consecutive primes", f"{a} and {b} are consecutive primes, so every number from {lo} to {hi} is composite. "
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
    return Problem(task, f"the second equation is {k}× the first with a different right side",
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
    return Problem(task, f"the average of numbers ≤ {m} is ≤ {m}",
                   f"If every number is at most {m}, their average is at most {m}, and {avg} > {m}. So no such numbers exist.",
                   [f"All {m}: average {m}.", f"I need a total of {k * avg} but the most I can get is {k * m}.", "Short again."], "list of numbers", "")


IMPOSSIBLE: dict[str, tuple[str, Callable[[random.Random], Problem]]] = {
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
}

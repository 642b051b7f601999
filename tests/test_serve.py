"""`nlakit serve`: the viewer's JSON API on tiny models (TestClient), its limits and queue, and a bounded load test."""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from nlakit.serve import Limits, Model, Viewer, background, check_quotes, create_app, split_lines
from nlakit.verbalizer import Explanation

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat. The quick brown fox jumps over the lazy dog."
SCRIPT = ('The text so far ends with: "…sat on the mat". It quotes "the quick brown fax".\n'
          'The next words may be "zebra unicorn". The current token is "dog".')
LIMITS = Limits(max_new_tokens=6, max_chars=300, max_positions=40, max_messages=4, queue=2, cache=16, jobs=4)


def scripted(nla, text: str = SCRIPT):
    """The same NLA (real AR, reference, target) whose AV always answers `text`: explanations with known quotes."""
    fake = dataclasses.replace(nla)
    fake.explain = lambda vectors, **kw: [Explanation(text=text, raw=text, ok=True, n_tokens=9) for _ in range(len(vectors))]
    return fake


@pytest.fixture(scope="module")
def client(make_nla, tiny_llama):
    return TestClient(create_app({"a": Model(make_nla("llama", 2), tiny_llama, label="tiny")}, LIMITS))


@pytest.fixture(scope="module")
def scripted_client(make_nla, tiny_llama):
    return TestClient(create_app({"a": Model(scripted(make_nla("llama", 2)), tiny_llama)}, LIMITS))


def run_job(client, job: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = client.get(f"/api/jobs/{job}").json()
        if j["state"] in ("done", "error"):
            return j
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish")


# ---- tokens, one token, quotes, lines --------------------------------------------------------------------
def test_tokenize_text_and_chat(client):
    r = client.post("/api/tokenize", json={"text": TEXT}).json()
    assert r["text"] == TEXT
    assert "".join(t["text"] for t in r["tokens"]) == TEXT
    assert all(TEXT[t["start"]:t["end"]] == t["text"] for t in r["tokens"])
    assert r["tokens"][0]["sink"] and not any(t["sink"] for t in r["tokens"][1:])
    chat = client.post("/api/tokenize", json={"messages": [{"role": "user", "content": "hello cat"}]}).json()
    assert "<|im_start|>user" in chat["text"] and "hello cat" in chat["text"]


def test_explain_a_token_beside_the_baselines(client, make_nla, tiny_llama):
    from nlakit.evaluate import EvalConfig, explain_text
    from nlakit.serve.viewer import VIEW_BASELINES

    r = client.post("/api/explain", json={"text": TEXT, "pos": 5}).json()
    assert r["pos"] == 5 and r["token"]["text"] == " mat"
    assert {"mean", "echo_ar8", "echo_ar32"} <= set(r["baselines"])
    assert set(r["skipped_baselines"]) == {"ridge_token", "ridge_token_bag8"}  # the tiny NLA ships no ridge maps
    ref = explain_text(make_nla("llama", 2), tiny_llama, TEXT, [5],
                       cfg=EvalConfig(n_positions=1, max_new_tokens=LIMITS.max_new_tokens, baselines=VIEW_BASELINES))["rows"][0]
    assert r["explanation"] == ref["explanation"]
    assert r["fve_nrm"] == pytest.approx(ref["fve_nrm"], abs=1e-5) and r["cos"] == pytest.approx(ref["cos"], abs=1e-5)
    assert r["baselines"]["mean"]["fve_nrm"] == pytest.approx(ref["baselines"]["mean"]["fve_nrm"], abs=1e-5)


def test_quote_check_marks(scripted_client):
    r = scripted_client.post("/api/explain", json={"text": TEXT, "pos": -1}).json()
    got = [(q["quote"], q["status"]) for q in r["quotes"]]
    assert got == [("sat on the mat", "found"), ("the quick brown fax", "approx"), ("zebra unicorn", "missing"), ("dog", "found")]
    found = r["quotes"][0]
    assert TEXT[found["span"][0]:found["span"][1]] == "sat on the mat"
    assert SCRIPT[found["start"]:found["end"]] == "sat on the mat"


def test_quotes_are_checked_against_the_text_up_to_the_token_only():
    ctx = "Paris is the capital"
    assert [q["status"] for q in check_quotes('ends with "capital" then "of France"', ctx)] == ["found", "missing"]
    quotes = check_quotes("“…Paris  is / the CAPITAL…”", ctx)
    assert [(q["quote"], q["status"]) for q in quotes] == [("Paris  is", "found"), ("the CAPITAL", "approx")]
    assert check_quotes("no quotes here", ctx) == []
    # whole words unless an ellipsis cut the quote; short quotes are never "approximately" there
    got = check_quotes('"is", "…ris", "Pari…", "capitol", "the capitol"', "Paris was the capital")
    assert [q["status"] for q in got] == ["missing", "found", "found", "missing", "approx"]


def test_line_salience_is_the_drop_when_a_line_is_removed(scripted_client, make_nla, tiny_llama):
    from nlakit.activations import extract
    from nlakit.metrics import score

    r = scripted_client.post("/api/explain", json={"text": TEXT, "pos": 6}).json()
    lines = split_lines(SCRIPT)
    assert [x["line"] for x in r["lines"]] == lines and len(lines) == 4
    nla = make_nla("llama", 2)
    (doc,) = extract(tiny_llama, [TEXT], nla.layer, [6])
    texts = [" ".join(lines), " ".join(lines[1:])]
    fve = score(nla.reconstruct(texts), doc.vectors.expand(2, -1), nla.reference, direction_only=True)["fve_nrm"]
    assert r["lines"][0]["fve_without"] == pytest.approx(float(fve[1]), abs=1e-4)
    assert r["lines"][0]["delta"] == pytest.approx(float(fve[0] - fve[1]), abs=1e-4)


def test_split_lines_keeps_quotes_whole():
    assert split_lines('One. Two says "a. b" here!\nThree') == ["One.", 'Two says "a. b" here!', "Three"]


# ---- heatmap, compare, export ----------------------------------------------------------------------------
def test_heatmap_explains_every_token_in_one_job(client):
    start = client.post("/api/heatmap", json={"text": TEXT})
    assert start.status_code == 202
    j = run_job(client, start.json()["job"])
    assert j["state"] == "done" and j["done"] == j["total"] == len(j["result"]["rows"])
    rows = j["result"]["rows"]
    n_tokens = len(client.post("/api/tokenize", json={"text": TEXT}).json()["tokens"])
    assert [r["pos"] for r in rows] == list(range(1, n_tokens))  # every token but the sink
    assert rows[0]["drift"] is None and all(0 <= r["drift"] <= 2 for r in rows[1:])
    one = client.post("/api/explain", json={"text": TEXT, "pos": rows[3]["pos"]}).json()
    assert rows[3]["explanation"] == one["explanation"]  # the batch and the single token agree (greedy)
    assert rows[3]["fve_nrm"] == pytest.approx(one["fve_nrm"], abs=1e-4)
    assert client.get("/api/jobs/nope").status_code == 404


def test_compare_two_nlas_side_by_side(make_nla, tiny_llama, tiny_gemma):
    from nlakit.targets import tiny_target

    variant = tiny_target("llama", seed=1)  # "the same NLA on a variant of its target"
    c = TestClient(create_app({"a": Model(make_nla("llama", 2), tiny_llama), "b": Model(make_nla("llama", 2), variant),
                               "c": Model(make_nla("gemma3", 2), tiny_gemma)}, LIMITS))
    r = c.post("/api/compare", json={"text": TEXT, "pos": 4, "models": ["a", "b"]}).json()
    a, b = r["panels"]
    assert (a["model"], b["model"]) == ("a", "b") and a["pos"] == b["pos"] == 4
    assert a["fve_nrm"] != b["fve_nrm"]  # different activations, scored separately
    assert c.post("/api/compare", json={"text": TEXT, "pos": 4, "models": ["a", "zzz"]}).status_code == 422
    a, g = c.post("/api/compare", json={"text": TEXT, "pos": 4, "models": ["a", "c"]}).json()["panels"]
    assert g["pos"] == a["pos"] + 1 and g["token"]["text"] == a["token"]["text"] == " the"  # Gemma's BOS shifts positions


def test_export_renders_with_nlakit_report(client, tmp_path):
    from typer.testing import CliRunner

    from nlakit.cli import app

    res = client.post("/api/export", json={"text": TEXT, "positions": [5, 2]})
    assert res.status_code == 200 and "attachment" in res.headers["content-disposition"]
    r = res.json()
    assert r["kind"] == "explain" and [row["pos"] for row in r["rows"]] == [2, 5]
    assert all("quotes" in row for row in r["rows"])
    path = tmp_path / "viewer.json"
    path.write_text(json.dumps(r))
    out = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "viewer.html")])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "viewer.html").read_text()
    assert "2 position(s) explained" in html and "echo_ar8" in html


# ---- bad input, limits, queue ----------------------------------------------------------------------------
def test_oversized_requests_get_413(client):
    long = "cat " * 100  # 400 characters > 300
    for path, body in (("/api/explain", {"text": long, "pos": 1}), ("/api/tokenize", {"text": long}),
                       ("/api/heatmap", {"text": "cat " * 60}),  # 240 chars but 60 tokens > 40 positions
                       ("/api/export", {"text": TEXT, "positions": list(range(41))}),
                       ("/api/tokenize", {"messages": [{"role": "user", "content": "hi"}] * 5})):
        r = client.post(path, json=body)
        assert r.status_code == 413, (path, r.text)
        assert re.search(r"at most \d+", r.json()["detail"])


def test_bad_requests_get_422_naming_the_field(client):
    def detail(body, path="/api/explain", **kw):
        r = client.post(path, json=body, **kw) if body is not None else client.post(path, **kw)
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    assert "'pos'" in detail({"text": TEXT, "pos": "three"})
    assert "'pos'" in detail({"text": TEXT})
    assert "'messages.0.role'" in detail({"messages": [{"role": "robot", "content": "x"}]}, "/api/tokenize")
    assert "not valid JSON" in detail(None, content=b"{nope", headers={"content-type": "application/json"})
    assert "exactly one of" in detail({"text": "a", "messages": []}, "/api/tokenize")
    assert "unknown model" in detail({"text": TEXT, "pos": 1, "model": "/etc/passwd"})
    assert "sink" in detail({"text": TEXT, "pos": 0})
    assert "out of range" in detail({"text": TEXT, "pos": 500})
    assert "empty" in detail({"text": "   ", "pos": 1})


def test_a_full_queue_answers_503_and_a_short_one_waits(make_nla, tiny_llama):
    app = create_app({"a": Model(make_nla("llama", 2), tiny_llama)}, dataclasses.replace(LIMITS, queue=1))
    c = TestClient(app)
    q = app.state.queues["a"]
    with q.slot():  # the model is busy
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(c.post("/api/tokenize", json={"text": TEXT}).status_code))
        waiter.start()
        time.sleep(0.3)
        assert not got  # the first one waits in the queue
        r = c.post("/api/tokenize", json={"text": TEXT})
        assert r.status_code == 503 and r.headers["retry-after"] and "busy" in r.json()["detail"]
        assert c.post("/api/heatmap", json={"text": TEXT}).status_code == 503
    waiter.join(10)
    assert got == [200]


def test_never_opens_a_file_path_from_a_request(client, monkeypatch):
    opened: list[str] = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    for body in ({"text": "/etc/passwd", "pos": 1}, {"text": "../../pyproject.toml", "pos": -1},
                 {"text": "/etc/hostname", "pos": 1, "model": "/etc/hostname"}):
        client.post("/api/explain", json=body)
    client.post("/api/tokenize", json={"text": "/etc/passwd"})
    for url in ("/static/../app.py", "/static/%2e%2e/viewer.py", "/static//etc/passwd"):
        assert client.get(url).status_code == 404
    assert not [f for f in opened if "passwd" in f or "hostname" in f or f.endswith((".toml", "app.py", "viewer.py"))]
    # and no request body has a field that could carry a path
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = {f for s in schemas.values() for f in s.get("properties", {})}
    assert not [f for f in fields if re.search(r"path|file|dir", f)]


def test_api_is_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/info", "/api/tokenize", "/api/explain", "/api/compare", "/api/heatmap", "/api/jobs/{job_id}", "/api/export"} <= set(paths)
    assert client.get("/").status_code == 200 and "app.js" in client.get("/").text


def test_serve_binds_loopback_by_default(monkeypatch, tiny_bundle):
    from typer.testing import CliRunner

    import nlakit.serve
    from nlakit.cli import app

    calls = []
    monkeypatch.setattr(nlakit.serve, "run", lambda application, host, port: calls.append((host, port, application)))
    res = CliRunner().invoke(app, ["serve", "--nla", str(tiny_bundle), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    host, port, application = calls[0]
    assert (host, port) == ("127.0.0.1", 8000)
    assert [m["name"] for m in TestClient(application).get("/api/info").json()["models"]] == ["a"]
    res = CliRunner().invoke(app, ["serve", "--nla", str(tiny_bundle), "--compare-target", "tiny:llama", "--host", "0.0.0.0"])
    assert res.exit_code == 0 and "anyone who can reach" in res.output
    assert [m["name"] for m in TestClient(calls[1][2]).get("/api/info").json()["models"]] == ["a", "b"]


def test_ci_installs_chromium_then_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.DOTALL)
    assert len(blocks) == 2  # install + demo, install + tests
    assert ci[-1] == blocks[1]
    assert any(line.startswith("command -v chromium") and "apt-get install -y chromium" in line for line in ci)


# ---- load --------------------------------------------------------------------------------------------------
def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def test_load_4_clients_x_50_requests(make_nla, tiny_llama):
    import httpx

    limits = dataclasses.replace(LIMITS, queue=8)
    app = create_app(Viewer({"a": Model(make_nla("llama", 2), tiny_llama)}, limits))
    texts = [TEXT, "Once upon a time there was a girl.", "def main(): return x + y"]
    errors: list = []
    statuses: list[int] = []
    with background(app) as url:
        before = _rss_mb()

        def client_run(k: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                for i in range(50):
                    text = texts[(k + i) % len(texts)]
                    kind = i % 5
                    try:
                        if i % 25 == 24:  # a heatmap job now and then: the job table stays bounded
                            r = c.post("/api/heatmap", json={"text": text})
                        elif kind == 0:
                            r = c.get("/api/info")
                        elif kind in (1, 2):
                            r = c.post("/api/tokenize", json={"text": text})
                        elif kind == 3:
                            r = c.post("/api/explain", json={"text": text, "pos": 1 + (k * 50 + i) % 6})
                        else:
                            r = c.post("/api/explain", json={"text": text * 3, "pos": -1 - (i % 4)})
                        statuses.append(r.status_code)
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))

        threads = [threading.Thread(target=client_run, args=(k,)) for k in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - t0
        after = _rss_mb()
        while any(j["state"] in ("queued", "running") for j in list(app.state.jobs.values())):
            time.sleep(0.05)
    assert not errors and len(statuses) == 200 and set(statuses) == {200, 202}, (errors[:3], sorted(set(statuses)))
    assert statuses.count(202) == 8 and all(j["state"] == "done" for j in app.state.jobs.values())
    assert len(app.state.jobs) <= limits.jobs + 4  # finished jobs beyond the limit are dropped (4 may still have run)
    assert len(app.state.viewer._cache) <= limits.cache
    if before is not None:
        assert after - before < 300, f"RSS grew {after - before:.0f} MB over 200 requests"
    assert elapsed < 60

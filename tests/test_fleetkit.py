"""fleetkit against a real etcd 3.4 (tests/etcd_fixtures.py): the revision
arithmetic fleet mode's resync relies on, etcd's limits, leases, watches
(including compaction, which etcd3gw does not surface), outages and TLS."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from etcd_fixtures import etcd, etcd_tls  # noqa: F401 - fixtures

from vifwire.errors import VifwireError
from vifwire.fleetkit import etcd as etcd_mod
from vifwire.fleetkit import keys
from vifwire.fleetkit.etcd import KV, Compacted, Etcd, EtcdConfigError, EtcdError, Event, LeaseExpired


def collect(watch, n: int, timeout: float = 5.0) -> tuple[list[list[Event]], BaseException | None]:
    """Batches from ``watch`` until ``n`` events arrived, it raised, or the
    timeout passed (then it is cancelled): a broken watch fails, never hangs."""
    batches: list[list[Event]] = []
    error: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            for batch in watch:
                batches.append(batch)
                if sum(map(len, batches)) >= n:
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the test
            error.append(e)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(timeout):
        watch.cancel()
        done.wait(2)
    return batches, (error[0] if error else None)


def grouped(batches: list[list[Event]]) -> list[int]:
    """Events per revision, checking that revisions only increase and that
    no revision (one transaction) is split between two batches."""
    seen: dict[int, int] = {}
    last = 0
    for batch in batches:
        revs = [e.mod_revision for e in batch]
        assert revs == sorted(revs) and revs[0] >= last and revs[0] not in seen, revs
        for r in revs:
            seen[r] = seen.get(r, 0) + 1
        last = revs[-1]
    return list(seen.values())


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# -- keys (pure) -------------------------------------------------------------

def test_key_layout():
    assert keys.desired_prefix("h1") == "/vifwire/v1/hosts/h1/ports/"
    assert keys.desired_key("h1", "p-1") == "/vifwire/v1/hosts/h1/ports/p-1"
    assert keys.status_prefix("h1") == "/vifwire/v1/status/h1/"
    assert keys.status_key("h1", "p-1") == "/vifwire/v1/status/h1/p-1"
    assert keys.agent_key("h1") == keys.AGENTS_PREFIX + "h1" == "/vifwire/v1/agents/h1"
    assert keys.port_id_of(keys.desired_key("h1", "p-1"), keys.desired_prefix("h1")) == "p-1"
    assert keys.desired_key("hôst", "p") == "/vifwire/v1/hosts/hôst/ports/p"


@pytest.mark.parametrize("bad", ["", "a/b", "x\ny", "tab\there", "x" * 254, "nul\0"])
def test_bad_names_are_one_line_value_errors(bad):
    for build in (keys.desired_prefix, keys.status_prefix, keys.agent_key, lambda n: keys.desired_key("h", n)):
        with pytest.raises(ValueError) as e:
            build(bad)
        assert "\n" not in str(e.value)
    keys.desired_key("x" * 253, "y" * 253)  # the limit itself is fine


def test_port_id_of_rejects_foreign_and_nested_keys():
    prefix = keys.desired_prefix("h1")
    for key in ("/vifwire/v1/hosts/h2/ports/p", prefix, prefix + "a/b"):
        with pytest.raises(ValueError):
            keys.port_id_of(key, prefix)


def test_keys_alone_do_not_import_the_http_client():
    """Building keys must not cost etcd3gw's ~0.1 s of imports."""
    code = "import sys, vifwire.fleetkit.keys; print('etcd3gw' in sys.modules, 'requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- configuration -----------------------------------------------------------

def test_bad_configuration_is_a_usage_error(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    for args, kw in [(("",), {}), (("ftp://h:1",), {}), (("http://h:1/path",), {}), (("http://h:notaport",), {}),
                     (("https://h:1",), {"cert": str(cert)}),
                     (("https://h:1",), {"cacert": str(tmp_path / "missing.pem")}),
                     (("http://h:1",), {"cacert": str(cert)}),
                     (("http://h:1",), {"timeout": 0})]:
        with pytest.raises(EtcdConfigError) as e:
            Etcd(*args, **kw)
        assert e.value.exit_code == 2 and isinstance(e.value, VifwireError)
        one_line(e.value)


# -- key-value ---------------------------------------------------------------

def test_put_many_and_get_prefix_report_revisions(etcd):
    c = Etcd(etcd.url)
    base = c.revision()
    r1 = c.put_many({keys.desired_key("h1", p): p.encode() for p in ("b", "a", "c")})
    assert r1 == base + 1  # one transaction: one revision
    c.put_many({keys.desired_key("h2", "a"): b"other host", keys.status_key("h1", "a"): b"st"})
    items, rev = c.get_prefix(keys.desired_prefix("h1"))
    assert rev == c.revision() == r1 + 1
    assert [(kv.key, kv.value) for kv in items] == [(keys.desired_key("h1", p), p.encode()) for p in "abc"]
    assert items[0] == KV(keys.desired_key("h1", "a"), b"a", r1, r1)

    r3 = c.put_many({keys.desired_key("h1", "a"): b"A"}, deletes=[keys.desired_key("h1", "b")])
    items, rev = c.get_prefix(keys.desired_prefix("h1"))
    assert rev == r3
    assert [(kv.key.rsplit("/", 1)[1], kv.value, kv.mod_revision, kv.create_revision) for kv in items] == [
        ("a", b"A", r3, r1), ("c", b"c", r1, r1)]
    with pytest.raises(ValueError, match="both written and deleted"):
        c.put_many({"/k": b"1"}, deletes=["/k"])

    assert c.delete([keys.desired_key("h1", "c"), "/no/such/key"]) == r3 + 1
    assert c.delete_prefix(keys.desired_prefix("h1")) == r3 + 2
    assert c.get_prefix(keys.desired_prefix("h1")) == ([], r3 + 2)
    assert [kv.key for kv in c.get_prefix(keys.PREFIX + "/")[0]] == [keys.desired_key("h2", "a"),
                                                                     keys.status_key("h1", "a")]
    # UTF-8 names round-trip (etcd3gw alone encodes str keys as latin-1)
    c.put_many({keys.agent_key("hôst-€"): "✓".encode()})
    assert c.get_prefix(keys.AGENTS_PREFIX)[0][0].key == "/vifwire/v1/agents/hôst-€"
    assert c.status()["revision"] == c.revision() and c.status()["is_leader"]


def test_1000_keys_are_chunked_to_etcds_txn_limit(etcd, monkeypatch):
    """etcd 3.4 refuses more than 128 operations per transaction (its default
    --max-txn-ops, kept as is): put_many splits, one revision per chunk."""
    c = Etcd(etcd.url)
    base = c.revision()
    items = {keys.status_key("h1", f"p{i:04d}"): b'{"state": "active"}' for i in range(1000)}
    assert c.put_many(items) == base + 8  # ceil(1000 / 128)
    monkeypatch.setattr(etcd_mod, "PAGE_SIZE", 300)  # a paged read is still one snapshot
    got, rev = c.get_prefix(keys.status_prefix("h1"))
    assert rev == base + 8 and [kv.key for kv in got] == sorted(items) and len(got) == 1000
    assert c.put_many({}, deletes=list(items)[:500]) == base + 12
    assert len(c.get_prefix(keys.status_prefix("h1"))[0]) == 500
    with pytest.raises(EtcdError, match="too many operations"):  # what an unchunked txn gets
        c.request("kv/txn", {"success": [{"request_delete_range": {"key": "eA=="}}] * 129})


# -- leases ------------------------------------------------------------------

def test_create_if_absent_with_lease_revoke_and_expiry(etcd):
    c = Etcd(etcd.url)
    key = keys.agent_key("h1")
    lease = c.grant_lease(2)
    assert c.create_if_absent(key, b"agent-1", lease) is True
    assert c.create_if_absent(key, b"agent-2", None) is False  # somebody holds the name
    assert c.get_prefix(key)[0][0].value == b"agent-1"
    assert 0 < lease.refresh() <= 2
    lease.revoke()
    lease.revoke()  # already gone: fine
    assert c.get_prefix(key)[0] == []
    with pytest.raises(LeaseExpired):
        lease.refresh()

    short = c.grant_lease(2)
    assert c.create_if_absent(key, b"agent-2", short) is True
    deadline = time.monotonic() + 6
    while c.get_prefix(key)[0] and time.monotonic() < deadline:  # nobody refreshes: it expires
        time.sleep(0.2)
    assert c.get_prefix(key)[0] == []
    assert c.create_if_absent(key, b"agent-3") is True


# -- watch -------------------------------------------------------------------

def test_watch_from_a_revision_sees_exactly_the_later_events_grouped(etcd):
    c = Etcd(etcd.url)
    prefix = keys.desired_prefix("h1")
    c.put_many({prefix + "old": b"0"})
    _, listed = c.get_prefix(prefix)
    r1 = c.put_many({prefix + "a": b"1", prefix + "b": b"2"})
    c.put_many({keys.desired_prefix("h2") + "x": b"not mine"})
    r3 = c.put_many({prefix + "a": b"3"}, deletes=[prefix + "old"])
    watch = c.watch_prefix(prefix, listed + 1)  # catch-up: these are history
    batches, err = collect(watch, 4)
    watch.cancel()
    assert err is None
    events = [e for b in batches for e in b]
    assert events == [Event("put", prefix + "a", b"1", r1), Event("put", prefix + "b", b"2", r1),
                      Event("put", prefix + "a", b"3", r3), Event("delete", prefix + "old", None, r3)]
    assert grouped(batches) == [2, 2] and watch.last_revision == r3

    live = c.watch_prefix(prefix, c.revision() + 1)
    writer = threading.Timer(0.2, lambda: [c.put_many({prefix + f"l{i}": b"x" for i in range(200)}),
                                           c.delete_prefix(prefix)])
    writer.start()
    batches, err = collect(live, 200 + 202)
    writer.join()
    live.cancel()
    assert err is None
    assert grouped(batches) == [128, 72, 202]  # two chunks of put_many, then the prefix delete
    assert {e.kind for e in batches[-1]} == {"delete"}  # a, b and the 200 new keys


def test_cancel_from_another_thread_ends_the_iteration(etcd):
    c = Etcd(etcd.url)
    watch = c.watch_prefix("/idle/", c.revision() + 1)
    threading.Timer(0.2, watch.cancel).start()
    t = time.monotonic()
    batches, err = collect(watch, 1, timeout=5)
    assert (batches, err) == ([], None) and time.monotonic() - t < 2


def test_watch_from_a_compacted_revision_raises_compacted(etcd):
    c = Etcd(etcd.url)
    prefix = keys.desired_prefix("h1")
    first = c.put_many({prefix + "a": b"1"})
    for i in range(3):
        c.put_many({prefix + "a": str(i).encode()})
    c.compact(first + 2)
    _, err = collect(c.watch_prefix(prefix, first), 1)
    assert isinstance(err, Compacted) and (err.start_revision, err.compact_revision) == (first, first + 2)
    assert "list again" in one_line(err)
    # the documented recovery: list, then watch from the listed revision + 1
    items, rev = c.get_prefix(prefix)
    assert items[0].value == b"2"
    watch = c.watch_prefix(prefix, rev + 1)
    c.put_many({prefix + "b": b"after"})
    batches, err = collect(watch, 1)
    watch.cancel()
    assert err is None and batches == [[Event("put", prefix + "b", b"after", rev + 1)]]


# -- outages -----------------------------------------------------------------

def test_etcd_down_is_a_quick_one_line_error_and_comes_back(etcd):
    c = Etcd(etcd.url, timeout=1)
    rev = c.put_many({"/k": b"v"})
    watch = c.watch_prefix("/k", rev + 1)
    etcd.stop()
    batches, err = collect(watch, 1)
    assert batches == [] and isinstance(err, EtcdError) and err.network
    assert one_line(err).startswith(f"etcd {etcd.url}: watch failed")
    for call in (c.revision, lambda: c.get_prefix("/"), lambda: c.put_many({"/k": b"w"}),
                 lambda: c.watch_prefix("/k", 1), lambda: c.grant_lease(5), c.status):
        t = time.monotonic()
        with pytest.raises(EtcdError) as e:
            call()
        assert time.monotonic() - t < 0.5
        assert one_line(e.value).startswith(f"etcd {etcd.url}: ") and "connection refused" in str(e.value)
        assert e.value.exit_code == 1

    etcd.start()  # same data dir and ports: the same client carries on
    assert c.revision() == rev and c.get_prefix("/k")[0][0].value == b"v"

    etcd.pause()  # hung, not dead: the timeout bounds every call
    try:
        for call in (c.revision, lambda: c.watch_prefix("/k", 1)):
            t = time.monotonic()
            with pytest.raises(EtcdError, match="timed out after 1 s"):
                call()
            assert 0.9 < time.monotonic() - t < 3
    finally:
        etcd.resume()
    assert c.revision() == rev


def test_several_endpoints_use_the_first_that_answers(etcd):
    from etcd_fixtures import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    c = Etcd(f"{dead}, {etcd.url}", timeout=1)
    assert c.put_many({"/k": b"v"}) > 1 and c.url == etcd.url
    etcd.stop()
    with pytest.raises(EtcdError):
        c.revision()
    with pytest.raises(EtcdError) as e:
        c.revision()
    msg = one_line(e.value)
    assert msg.startswith("etcd unreachable: ") and dead in msg and etcd.url in msg


# -- TLS ---------------------------------------------------------------------

def test_tls_needs_a_client_certificate_from_the_ca(etcd_tls, monkeypatch):
    pki = etcd_tls.tls
    # requests would let these override the CA we pass (requests#3829)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    good = Etcd(etcd_tls.url, cacert=pki.cacert, cert=pki.cert, key=pki.key, timeout=2)
    rev = good.put_many({"/tls/a": b"1"})
    assert good.get_prefix("/tls/")[0][0].value == b"1"
    watch = good.watch_prefix("/tls/", rev)
    batches, err = collect(watch, 1)
    watch.cancel()
    assert err is None and batches[0][0].key == "/tls/a"

    for kw, why in [({"cacert": pki.cacert}, "TLS: "),
                    ({"cacert": pki.cacert, "cert": pki.other_cert, "key": pki.other_key}, "TLS: "),
                    ({"cert": pki.cert, "key": pki.key}, "certificate verify failed")]:
        agent = Etcd(etcd_tls.url, timeout=2, **kw)
        for call in (agent.revision, lambda: agent.watch_prefix("/tls/", 1)):
            with pytest.raises(EtcdError) as e:
                call()
            assert why in one_line(e.value), e.value
    with pytest.raises(EtcdError):  # plain HTTP to the TLS port
        Etcd(etcd_tls.url.replace("https:", "http:"), timeout=2).revision()

"""End-to-end checks of converge through the official Python Cosmos DB SDK (azure-cosmos).

Run by cli/tests/cosmos_sdk.rs against real `converge serve` processes:

    python_suite.py <phase> <key file> <region> <url> [args...]

Every phase talks to converge through the SDK's public API only, with a client whose
preferred location is <region> and multiple write locations on. A phase exits non-zero (an
assertion or an SDK error) when converge does not behave as Cosmos DB would.
"""

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

from azure.core import MatchConditions
from azure.core.exceptions import ServiceRequestError
from azure.cosmos import CosmosClient, PartitionKey, exceptions
from azure.cosmos.documents import SSLConfiguration

DB = "shop"


def ssl_config(ca):
    """Verification against the certificates of the PEM file `ca` (for every host: the SDK
    skips verification of localhost only when no SSL configuration is given)."""
    config = SSLConfiguration()
    config.SSLCaCerts = ca
    return config


def client(key_file, region, url, **kwargs):
    key = open(key_file).read().strip()
    # Over HTTPS, the certificate the test made is the one trusted (CONVERGE_CA).
    if os.environ.get("CONVERGE_CA"):
        kwargs.setdefault("ssl_config", ssl_config(os.environ["CONVERGE_CA"]))
    kwargs.setdefault("connection_timeout", 10)
    return CosmosClient(
        url,
        credential=key,
        preferred_locations=[region],
        multiple_write_locations=True,
        **kwargs,
    )


def expect(error, f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except error as e:
        return e
    raise AssertionError(f"{f.__name__} did not raise {error.__name__}")


def routes(c, region):
    """Every route through the SDK, with the errors the SDK maps to its exceptions."""
    db = c.create_database("routes")
    assert db.read()["id"] == "routes"
    expect(exceptions.CosmosResourceExistsError, c.create_database, "routes")
    assert "routes" in [d["id"] for d in c.list_databases()]
    co = db.create_container("items", partition_key=PartitionKey(path="/pk"))
    expect(
        exceptions.CosmosResourceExistsError,
        db.create_container,
        "items",
        partition_key=PartitionKey(path="/pk"),
    )
    props = co.read()
    assert props["partitionKey"]["paths"] == ["/pk"], props
    assert props["conflictResolutionPolicy"]["mode"] == "LastWriterWins", props
    assert [p["id"] for p in db.list_containers()] == ["items"]

    created = co.create_item({"id": "a", "pk": "p", "n": 1})
    assert created["_rid"] and created["_self"] and created["_etag"], created
    assert isinstance(created["_ts"], int)
    expect(exceptions.CosmosResourceExistsError, co.create_item, {"id": "a", "pk": "p"})
    co.upsert_item({"id": "b", "pk": 42, "n": 0})
    co.upsert_item({"id": "c", "pk": None, "n": 0})
    assert co.read_item("b", partition_key=42)["n"] == 0
    assert co.read_item("c", partition_key=None)["pk"] is None
    spaced = co.upsert_item({"id": "with space & ü", "pk": "p"})
    assert co.read_item("with space & ü", partition_key="p")["id"] == spaced["id"]
    expect(exceptions.CosmosResourceNotFoundError, co.read_item, "a", partition_key="other")

    item = co.read_item("a", partition_key="p")
    item["n"] = 2
    replaced = co.replace_item(
        "a", item, etag=item["_etag"], match_condition=MatchConditions.IfNotModified
    )
    assert replaced["n"] == 2 and replaced["_etag"] != item["_etag"]
    e = expect(
        exceptions.CosmosAccessConditionFailedError,
        co.replace_item,
        "a",
        item,
        etag=item["_etag"],
        match_condition=MatchConditions.IfNotModified,
    )
    assert e.status_code == 412

    patched = co.patch_item(
        "a",
        "p",
        [
            {"op": "incr", "path": "/n", "value": 5},
            {"op": "add", "path": "/tags", "value": ["x"]},
            {"op": "set", "path": "/tags/0", "value": "y"},
        ],
    )
    assert patched["n"] == 7 and patched["tags"] == ["y"], patched
    before = co.read_item("a", partition_key="p")
    e = expect(
        exceptions.CosmosHttpResponseError,
        co.patch_item,
        "a",
        "p",
        [{"op": "set", "path": "/ok", "value": 1}, {"op": "remove", "path": "/missing"}],
    )
    assert e.status_code == 400
    after = co.read_item("a", partition_key="p")
    assert after["_etag"] == before["_etag"] and "ok" not in after, "a bad patch wrote nothing"

    hierarchical(db)

    ids = sorted(i["id"] for i in co.read_all_items(max_item_count=2))
    assert ids == ["a", "b", "c", "with space & ü"], ids

    feed = list(co.query_items_change_feed(start_time="Beginning"))
    assert sorted(i["id"] for i in feed) == ids, feed
    assert list(co.query_items_change_feed(start_time="Now")) == []
    # One partition key's changes: the SDK sends that key's effective partition key range.
    by_pk = sorted(i["id"] for i in co.query_items_change_feed(partition_key="p", start_time="Beginning"))
    assert by_pk == ["a", "with space & ü"], by_pk
    by_range = co.query_items_change_feed(feed_range=co.feed_range_from_partition_key(42), start_time="Beginning")
    assert [i["id"] for i in by_range] == ["b"]
    day = timedelta(days=1)
    assert list(co.query_items_change_feed(start_time=datetime.now(timezone.utc) + day)) == []
    since = sorted(i["id"] for i in co.query_items_change_feed(start_time=datetime.now(timezone.utc) - day))
    assert since == ids, since
    co.delete_item("b", partition_key=42)
    expect(exceptions.CosmosResourceNotFoundError, co.read_item, "b", partition_key=42)
    expect(exceptions.CosmosResourceNotFoundError, co.delete_item, "b", partition_key=42)

    listed = sorted(i["id"] for i in co.query_items("SELECT * FROM c", enable_cross_partition_query=True))
    assert listed == sorted(i["id"] for i in co.read_all_items()), listed
    e = expect(exceptions.CosmosHttpResponseError, lambda: list(co.query_items("SELECT * FROM c WHERE", enable_cross_partition_query=True)))
    assert e.status_code == 400 and "offset 21" in str(e), e

    expect(exceptions.CosmosHttpResponseError, co.upsert_item, {"id": "big", "pk": "p", "x": "y" * (3 << 20)})
    assert list(co.list_conflicts()) == []

    # Another client re-creates the container: this client's cached _rid is stale, converge
    # says so (400, sub-status 1024) and the SDK refreshes its cache and writes to the new one.
    other = client(*ARGS)
    other_db = other.get_database_client("routes")
    other_db.delete_container("items")
    other_db.create_container("items", partition_key=PartitionKey(path="/pk"))
    co.create_item({"id": "after", "pk": "p"})
    assert [i["id"] for i in other_db.get_container_client("items").read_all_items()] == ["after"]

    db.delete_container("items")
    expect(exceptions.CosmosResourceNotFoundError, db.get_container_client("items").read)
    c.delete_database("routes")
    expect(exceptions.CosmosResourceNotFoundError, c.get_database_client("routes").read)
    print("routes ok")


def hierarchical(db):
    """A container with a hierarchical partition key: whole keys for items, prefixes for the
    change feed."""
    h = db.create_container(
        "tenants", partition_key=PartitionKey(path=["/tenant", "/user"], kind="MultiHash")
    )
    pk = h.read()["partitionKey"]
    assert pk["paths"] == ["/tenant", "/user"] and pk["kind"] == "MultiHash", pk
    h.create_item({"id": "1", "tenant": "acme", "user": "bob", "n": 1})
    h.create_item({"id": "2", "tenant": "acme", "user": "ann"})
    h.create_item({"id": "3", "tenant": "other", "user": "bob"})
    h.create_item({"id": "1", "tenant": "acme", "user": "cy"})
    assert h.read_item("1", partition_key=["acme", "bob"])["n"] == 1
    assert h.read_item("1", partition_key=["acme", "cy"])["user"] == "cy"
    expect(exceptions.CosmosResourceNotFoundError, h.read_item, "1", partition_key=["acme", "ann"])
    expect(exceptions.CosmosResourceExistsError, h.create_item, {"id": "1", "tenant": "acme", "user": "bob"})
    patched = h.patch_item("1", ["acme", "bob"], [{"op": "incr", "path": "/n", "value": 1}])
    assert patched["n"] == 2, patched
    e = expect(
        exceptions.CosmosHttpResponseError,
        h.patch_item, "1", ["acme", "bob"], [{"op": "set", "path": "/user", "value": "x"}],
    )
    assert e.status_code == 400
    expect(exceptions.CosmosHttpResponseError, h.create_item, {"id": "4", "tenant": "acme"})
    h.delete_item("2", partition_key=["acme", "ann"])
    expect(exceptions.CosmosResourceNotFoundError, h.read_item, "2", partition_key=["acme", "ann"])
    # A prefix of the key names every item under it.
    acme = sorted(
        (i["id"], i.get("user")) for i in h.query_items_change_feed(partition_key=["acme"], start_time="Beginning")
        if not i.get("_deleted")
    )
    assert acme == [("1", "bob"), ("1", "cy")], acme
    whole = [i["id"] for i in h.query_items_change_feed(partition_key=["other", "bob"], start_time="Beginning")]
    assert whole == ["3"], whole
    db.delete_container("tenants")


def tls(c, region, wrong_ca):
    """Over HTTPS, verified against the regions' certificate: writes, reads, and a client that
    trusts another certificate is refused."""
    db = c.create_database_if_not_exists("tls")
    co = db.create_container_if_not_exists("items", partition_key=PartitionKey(path="/pk"))
    co.upsert_item({"id": "over-https", "pk": "p", "from": region})
    assert co.read_item("over-https", partition_key="p")["from"] == region
    started = time.monotonic()
    try:
        client(*ARGS, ssl_config=ssl_config(wrong_ca), retry_total=0, connection_timeout=5)
    except ServiceRequestError as e:
        assert "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate" in str(e).lower(), e
    else:
        raise AssertionError("a client that trusts another certificate connected")
    print(f"tls ok (refusal took {time.monotonic() - started:.1f}s)")


def setup(c, region):
    db = c.create_database_if_not_exists(DB)
    db.create_container("lww", partition_key=PartitionKey(path="/pk"))
    db.create_container(
        "manual",
        partition_key=PartitionKey(path="/pk"),
        conflict_resolution_policy={"mode": "Custom"},
    )
    db.create_container(
        "carts",
        partition_key=PartitionKey(path="/pk"),
        conflict_resolution_policy={
            "mode": "Custom",
            "conflictResolutionProcedure": f"dbs/{DB}/colls/carts/sprocs/cart-merge",
        },
    )
    policy = db.get_container_client("manual").read()["conflictResolutionPolicy"]
    assert policy["mode"] == "Custom" and not policy["conflictResolutionProcedure"], policy
    print("setup ok")


def write(c, region):
    """The same items written in this region while the others are down."""
    db = c.get_database_client(DB)
    for name in ["lww", "manual"]:
        co = db.get_container_client(name)
        for i in range(3):
            co.upsert_item({"id": f"item{i}", "pk": "p", "by": region})
    db.get_container_client("carts").upsert_item(
        {"id": "cart", "pk": "p", "lines": [{"sku": f"sku-{region}", "qty": 1}]}
    )
    print("write ok")


def snapshot(c, region):
    """What this region shows, as JSON on stdout, for the test to compare across regions."""
    db = c.get_database_client(DB)
    out = {}
    for name in ["lww", "manual", "carts"]:
        co = db.get_container_client(name)
        items = {i["id"]: {k: v for k, v in i.items() if not k.startswith("_")} for i in co.read_all_items()}
        conflicts = sorted(
            (x["id"], x["status"]) for x in co.list_conflicts() if x["status"] == "open"
        )
        out[name] = {"items": items, "conflicts": conflicts}
    print(json.dumps(out, sort_keys=True))


def conflicts(c, region, expected_regions):
    """The manual container lists its conflicts through list_conflicts; the LWW container none;
    the carts are merged."""
    db = c.get_database_client(DB)
    assert list(db.get_container_client("lww").list_conflicts()) == []
    manual = db.get_container_client("manual")
    listed = [x for x in manual.list_conflicts() if x["status"] == "open"]
    assert len(listed) == 3 * (expected_regions - 1), listed
    for x in listed:
        assert x["resourceType"] == "document" and x["operationType"] in ("create", "replace")
        content = json.loads(x["content"])
        assert content["id"].startswith("item") and content["by"], x
        one = manual.get_conflict(x["id"], partition_key="p")
        assert one["id"] == x["id"], one
    # A query shows the items in conflict as reads show them: their tentative values.
    queried = manual.query_items("SELECT * FROM c WHERE STARTSWITH(c.id, 'item')", enable_cross_partition_query=True)
    for item in queried:
        assert item == manual.read_item(item["id"], partition_key="p"), item
    cart = db.get_container_client("carts").read_item("cart", partition_key="p")
    skus = sorted(line["sku"] for line in cart["lines"])
    assert len(skus) == expected_regions, cart
    print("conflicts ok")


def resolve(c, region):
    """The application resolves every open conflict of the manual container with replace_item
    and deletes the records it handled."""
    manual = c.get_database_client(DB).get_container_client("manual")
    for x in [x for x in manual.list_conflicts() if x["status"] == "open"]:
        content = json.loads(x["content"])
        manual.replace_item(content["id"], {"id": content["id"], "pk": "p", "by": "application"})
    for x in manual.list_conflicts():
        manual.delete_conflict(x["id"], partition_key="p")
    expect(exceptions.CosmosResourceNotFoundError, manual.get_conflict, "0" * 32, partition_key="p")
    print("resolve ok")


def canonical(results):
    """Results as a multiset: sorted by their JSON text."""
    return sorted(results, key=lambda r: json.dumps(r, sort_keys=True))


def user_fields(result):
    """An object result without its system properties (keys starting with _)."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if not k.startswith("_")}
    return result


def queries(c, region, cases_file):
    """Every case of queries.json through query_items, in one partition or across them, at
    the default page size and at two items a page; paging by continuation token; a bad
    query's error; a patch whose condition holds and one whose condition does not."""
    spec = json.load(open(cases_file))
    db = c.create_database_if_not_exists("pyqueries")
    co = db.create_container("q", partition_key=PartitionKey(path="/pk"))
    for item in spec["items"]:
        co.create_item(item)
    for case in spec["cases"]:
        for size in (None, 2):
            kwargs = {"parameters": case.get("parameters")}
            if "pk" in case:
                kwargs["partition_key"] = case["pk"]
            else:
                kwargs["enable_cross_partition_query"] = True
            if size:
                kwargs["max_item_count"] = size
            got = [user_fields(r) for r in co.query_items(case["query"], **kwargs)]
            expected = case["expected"]
            if case.get("ordered", True):
                assert got == expected, (case["query"], size, got)
            else:
                assert canonical(got) == canonical(expected), (case["query"], size, got)

    text = "SELECT VALUE c.id FROM c ORDER BY c.id"
    pages = co.query_items(text, enable_cross_partition_query=True, max_item_count=4).by_page()
    first = list(next(pages))
    token = pages.continuation_token
    assert first == ["1", "2", "3", "4"] and token, (first, token)
    rest = co.query_items(text, enable_cross_partition_query=True, max_item_count=4).by_page(token)
    assert [i for page in rest for i in page] == ["5", "6"]

    e = expect(
        exceptions.CosmosHttpResponseError,
        lambda: list(co.query_items("SELECT c.n FROM c ORDER BY", enable_cross_partition_query=True)),
    )
    assert e.status_code == 400 and "offset 26" in str(e), e

    # A prefix of a hierarchical key scopes a query to the partitions under it.
    h = db.create_container("h", partition_key=PartitionKey(path=["/tenant", "/user"], kind="MultiHash"))
    for tenant, user in [("acme", "bob"), ("acme", "cy"), ("initech", "bob")]:
        h.create_item({"id": f"{tenant}-{user}", "tenant": tenant, "user": user})
    prefixed = sorted(h.query_items("SELECT VALUE c.id FROM c", partition_key=["acme"]))
    assert prefixed == ["acme-bob", "acme-cy"], prefixed
    whole = list(h.query_items("SELECT VALUE c.id FROM c", partition_key=["initech", "bob"]))
    assert whole == ["initech-bob"], whole

    ops = [{"op": "incr", "path": "/n", "value": 1}]
    patched = co.patch_item("1", "a", ops, filter_predicate="FROM c WHERE c.n = 3")
    assert patched["n"] == 4, patched
    e = expect(exceptions.CosmosHttpResponseError, co.patch_item, "1", "a", ops, filter_predicate="FROM c WHERE c.n = 3")
    assert e.status_code == 412, e
    assert co.read_item("1", partition_key="a")["n"] == 4
    c.delete_database("pyqueries")
    print("queries ok")


if __name__ == "__main__":
    phase, key_file, region, url, *rest = sys.argv[1:]
    ARGS = (key_file, region, url)
    c = client(*ARGS)
    if phase == "conflicts":
        conflicts(c, region, int(rest[0]))
    elif phase == "tls":
        tls(c, region, rest[0])
    elif phase == "queries":
        queries(c, region, rest[0])
    else:
        {"routes": routes, "setup": setup, "write": write, "snapshot": snapshot, "resolve": resolve}[phase](c, region)

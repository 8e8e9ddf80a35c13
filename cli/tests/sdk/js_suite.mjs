// End-to-end checks of converge through the official JavaScript Cosmos DB SDK (@azure/cosmos).
// Run by cli/tests/cosmos_sdk.rs against real `converge serve` processes:
//
//     node js_suite.mjs <phase> <key file> <region> <url> [args...]
//
// Every phase uses the SDK's public API only, with preferredLocations naming <region> and
// multiple write locations on; it exits non-zero when converge does not behave as Cosmos would.
import { CosmosClient } from "@azure/cosmos";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";

const [phase, keyFile, region, url, ...rest] = process.argv.slice(2);
const client = new CosmosClient({
  endpoint: url,
  key: readFileSync(keyFile, "utf8").trim(),
  connectionPolicy: {
    preferredLocations: [region],
    enableEndpointDiscovery: true,
    useMultipleWriteLocations: true,
  },
});

async function rejects(status, f) {
  try {
    await f();
  } catch (e) {
    assert.equal(e.code, status, `expected ${status}, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`expected an error ${status}`);
}

async function routes() {
  const { database: db } = await client.databases.create({ id: "jsroutes" });
  await rejects(409, () => client.databases.create({ id: "jsroutes" }));
  const { resources: dbs } = await client.databases.readAll().fetchAll();
  assert.ok(dbs.some((d) => d.id === "jsroutes"));
  const { container: co, resource: props } = await db.containers.create({
    id: "items",
    partitionKey: { paths: ["/pk"] },
  });
  assert.deepEqual(props.partitionKey.paths, ["/pk"]);
  assert.equal(props.conflictResolutionPolicy.mode, "LastWriterWins");
  const { resources: colls } = await db.containers.readAll().fetchAll();
  assert.deepEqual(colls.map((c) => c.id), ["items"]);

  const { resource: created } = await co.items.create({ id: "a", pk: "p", n: 1 });
  assert.ok(created._rid && created._self && created._etag);
  await rejects(409, () => co.items.create({ id: "a", pk: "p" }));
  await co.items.upsert({ id: "b", pk: 42, n: 0 });
  await co.items.upsert({ id: "with space & ü", pk: "p" });
  assert.equal((await co.item("b", 42).read()).resource.n, 0);
  assert.equal((await co.item("with space & ü", "p").read()).resource.pk, "p");
  assert.equal((await co.item("a", "other").read()).statusCode, 404);

  const { resource: item } = await co.item("a", "p").read();
  const { resource: replaced } = await co
    .item("a", "p")
    .replace({ ...item, n: 2 }, { accessCondition: { type: "IfMatch", condition: item._etag } });
  assert.equal(replaced.n, 2);
  await rejects(412, () =>
    co.item("a", "p").replace(item, { accessCondition: { type: "IfMatch", condition: item._etag } }),
  );
  const { resource: patched } = await co.item("a", "p").patch([
    { op: "incr", path: "/n", value: 5 },
    { op: "add", path: "/tags", value: ["x"] },
  ]);
  assert.equal(patched.n, 7);
  assert.deepEqual(patched.tags, ["x"]);
  await rejects(400, () => co.item("a", "p").patch([{ op: "remove", path: "/missing" }]));

  const iterator = co.items.getChangeFeedIterator({ changeFeedStartFrom: (await import("@azure/cosmos")).ChangeFeedStartFrom.Beginning() });
  const seen = [];
  while (iterator.hasMoreResults) {
    const page = await iterator.readNext();
    if (page.statusCode === 304) break;
    seen.push(...page.result.map((i) => i.id));
  }
  assert.deepEqual(seen.sort(), ["a", "b", "with space & ü"]);

  // A hierarchical partition key: items are named by all of its values.
  const { container: h, resource: hp } = await db.containers.create({
    id: "tenants",
    partitionKey: { paths: ["/tenant", "/user"], kind: "MultiHash", version: 2 },
  });
  assert.equal(hp.partitionKey.kind, "MultiHash");
  await h.items.create({ id: "1", tenant: "acme", user: "bob" });
  await h.items.create({ id: "1", tenant: "acme", user: "cy" });
  assert.equal((await h.item("1", ["acme", "bob"]).read()).resource.user, "bob");
  assert.equal((await h.item("1", ["acme", "ann"]).read()).statusCode, 404);
  await h.item("1", ["acme", "cy"]).delete();
  assert.equal((await h.item("1", ["acme", "cy"]).read()).statusCode, 404);
  await h.delete();

  await co.item("b", 42).delete();
  assert.equal((await co.item("b", 42).read()).statusCode, 404);
  const { resources: listed } = await co.items.query("SELECT * FROM c").fetchAll();
  assert.deepEqual(listed.map((i) => i.id).sort(), ["a", "with space & ü"]);
  const e = await rejects(400, () => co.items.query("SELECT * FROM c WHERE").fetchAll());
  assert.match(e.message, /offset 21/);
  const { resources: conflicts } = await co.conflicts.readAll().fetchAll();
  assert.deepEqual(conflicts, []);
  await co.delete();
  await rejects(404, () => db.container("items").read());
  await db.delete();
  await rejects(404, () => client.database("jsroutes").read());
  console.log("routes ok");
}

async function conflicts(expectedRegions) {
  const db = client.database("shop");
  const { resources: none } = await db.container("lww").conflicts.readAll().fetchAll();
  assert.deepEqual(none, []);
  const manual = db.container("manual");
  const { resources: listed } = await manual.conflicts.readAll().fetchAll();
  const open = listed.filter((c) => c.status === "open");
  assert.equal(open.length, 3 * (expectedRegions - 1));
  for (const c of open) {
    assert.equal(c.resourceType, "document");
    assert.ok(JSON.parse(c.content).id.startsWith("item"));
    const { resource: one } = await manual.conflict(c.id).read();
    assert.equal(one.id, c.id);
  }
  const { resource: cart } = await db.container("carts").item("cart", "p").read();
  assert.equal(cart.lines.length, expectedRegions);
  console.log("conflicts ok");
}

// Over HTTPS (NODE_EXTRA_CA_CERTS names the regions' certificate): what another region wrote
// arrives, pulled over HTTPS, and this region takes a write.
async function tls() {
  const co = client.database("tls").container("items");
  for (let tries = 0; ; tries++) {
    const r = await co.item("over-https", "p").read().catch((e) => ({ statusCode: e.code }));
    if (r.statusCode === 200) break;
    assert.ok(tries < 100, `over-https did not arrive: ${r.statusCode}`);
    await new Promise((done) => setTimeout(done, 300));
  }
  await co.items.upsert({ id: "from-js", pk: "p" });
  assert.equal((await co.item("from-js", "p").read()).resource.id, "from-js");
  console.log("tls ok");
}

// JSON text with object keys sorted: a multiset of results compares by it.
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

function userFields(r) {
  if (r && typeof r === "object" && !Array.isArray(r)) {
    return Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith("_")));
  }
  return r;
}

// Every case of queries.json through items.query (with and without a partition key, at the
// default page size and at two a page), fetchNext with a continuation token, readAll, a bad
// query's error, and patch conditions.
async function queries(casesFile) {
  const spec = JSON.parse(readFileSync(casesFile, "utf8"));
  const { database: db } = await client.databases.createIfNotExists({ id: "jsqueries" });
  const { container: co } = await db.containers.create({ id: "q", partitionKey: { paths: ["/pk"] } });
  for (const item of spec.items) await co.items.create(item);
  for (const c of spec.cases) {
    for (const maxItemCount of [undefined, 2]) {
      const options = {};
      if (c.pk !== undefined) options.partitionKey = c.pk;
      if (maxItemCount) options.maxItemCount = maxItemCount;
      const query = { query: c.query, parameters: c.parameters ?? [] };
      const { resources } = await co.items.query(query, options).fetchAll();
      const got = resources.map(userFields);
      const what = `${c.query} (maxItemCount ${maxItemCount})`;
      if (c.ordered === false) {
        assert.deepEqual(got.map(canonical).sort(), c.expected.map(canonical).sort(), what);
      } else {
        assert.deepEqual(got, c.expected, what);
      }
    }
  }
  const text = "SELECT VALUE c.id FROM c ORDER BY c.id";
  const first = await co.items.query(text, { maxItemCount: 4 }).fetchNext();
  assert.deepEqual(first.resources, ["1", "2", "3", "4"]);
  assert.ok(first.continuationToken);
  const rest = await co.items
    .query(text, { maxItemCount: 4, continuationToken: first.continuationToken })
    .fetchNext();
  assert.deepEqual(rest.resources, ["5", "6"]);
  const pages = [];
  for await (const page of co.items.query(text, { maxItemCount: 5 }).getAsyncIterator()) {
    pages.push(page.resources);
  }
  assert.deepEqual(pages, [["1", "2", "3", "4", "5"], ["6"]]);
  const { resources: all } = await co.items.readAll().fetchAll();
  assert.deepEqual(all.map((i) => i.id).sort(), ["1", "2", "3", "4", "5", "6"]);
  const e = await rejects(400, () => co.items.query("SELECT c.n FROM c ORDER BY").fetchAll());
  assert.match(e.message, /offset 26/);

  // A prefix of a hierarchical key scopes a query to the partitions under it.
  const { container: h } = await db.containers.create({
    id: "h",
    partitionKey: { paths: ["/tenant", "/user"], kind: "MultiHash", version: 2 },
  });
  for (const [tenant, user] of [["acme", "bob"], ["acme", "cy"], ["initech", "bob"]]) {
    await h.items.create({ id: `${tenant}-${user}`, tenant, user });
  }
  const { resources: prefixed } = await h.items
    .query("SELECT VALUE c.id FROM c", { partitionKey: ["acme"] })
    .fetchAll();
  assert.deepEqual(prefixed.sort(), ["acme-bob", "acme-cy"]);
  const { resources: whole } = await h.items
    .query("SELECT VALUE c.id FROM c", { partitionKey: ["initech", "bob"] })
    .fetchAll();
  assert.deepEqual(whole, ["initech-bob"]);

  const operations = [{ op: "incr", path: "/n", value: 1 }];
  const { resource: patched } = await co
    .item("1", "a")
    .patch({ condition: "FROM c WHERE c.n = 3", operations });
  assert.equal(patched.n, 4);
  await rejects(412, () => co.item("1", "a").patch({ condition: "FROM c WHERE c.n = 3", operations }));
  assert.equal((await co.item("1", "a").read()).resource.n, 4);
  await db.delete();
  console.log("queries ok");
}

if (phase === "routes") await routes();
else if (phase === "queries") await queries(rest[0]);
else if (phase === "tls") await tls();
else if (phase === "conflicts") await conflicts(Number(rest[0]));
else throw new Error(`no phase ${phase}`);

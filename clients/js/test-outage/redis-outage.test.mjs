// The client library across a Redis outage, run by tests/cluster/js_client_outage.rs
// with `node` (not `node --test`: this file asks the Rust test, over stdout and
// stdin, to stop and restart the Redis it owns). Two instances; the receiver on one,
// the sender on the other; Redis is killed mid-conversation and restarted; the
// receiver gets every message once, in order.

import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { after, test } from "node:test";

import { Auth, ShoalRealtime, createRest } from "../dist/index.js";

const instances = JSON.parse(process.env.SHOAL_INSTANCES ?? "[]");
if (instances.length < 2) throw new Error("run through tests/cluster/js_client_outage.rs");

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Asks the Rust test to do `command` and waits until it is done. */
async function ask(command) {
  process.stdout.write(`@shoal ${command}\n`);
  const { value } = await replies.next();
  assert.equal(value, "done", `the test could not ${command}`);
}

const clients = [];
after(() => {
  clients.forEach((c) => c.close());
  // Let the process end: nothing more will be asked.
  process.stdin.destroy();
});

async function newUser(name, base) {
  const email = `${name}-${crypto.randomUUID()}@example.com`;
  const auth = new Auth(base);
  const rest = createRest(auth);
  const { response } = await rest.POST("/api/auth/register", {
    body: { email, password: "correct horse battery", display_name: name },
  });
  assert.equal(response.status, 201);
  await auth.login(email, "correct horse battery");
  return { auth, rest, email };
}

async function until(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("every message once and in order across a Redis outage", { timeout: 90_000 }, async () => {
  const [a, b] = instances;
  const ada = await newUser("ada", a);
  const bob = await newUser("bob", b);
  const { data: ws } = await ada.rest.POST("/api/workspaces", { body: { name: "crew" } });
  const added = await ada.rest.POST("/api/workspaces/{wid}/members", {
    params: { path: { wid: ws.id } },
    body: { email: bob.email },
  });
  assert.equal(added.response.status, 201);
  const receiver = new ShoalRealtime(bob.auth, { socket: { transports: ["websocket"] } });
  const sender = new ShoalRealtime(ada.auth, { socket: { transports: ["websocket"] } });
  clients.push(receiver, sender);
  const received = [];
  const reloads = [];
  receiver.on("message", (m) => received.push(m));
  receiver.on("reload", (r) => reloads.push(r));
  await receiver.join(ws.id);
  await sender.join(ws.id);

  const acks = [];
  const say = async (n) => {
    for (let i = 0; i < n; i++) acks.push(await sender.send(ws.id, `message ${acks.length + 1}`));
  };
  await say(5);
  await until("the first five", async () => (received.length === 5 ? true : undefined));
  const redisDown = async () => {
    const health = await Promise.all(instances.map(async (i) => (await fetch(`${i}/health`)).json()));
    return health.every((h) => h.reasons.includes("redis_down"));
  };
  await ask("kill-redis");
  await until("both instances to see Redis down", async () => ((await redisDown()) ? true : undefined));
  await say(5); // committed; their live delivery has no broker between the instances
  await ask("restart-redis");
  await until("both instances to see Redis back", async () => ((await redisDown()) ? undefined : true));
  await say(5);
  await until("every message", async () =>
    received.some((m) => m.seq >= acks.at(-1).seq) ? true : undefined,
  );
  assert.deepEqual(received.map((m) => m.seq), acks.map((x) => x.seq), "every message once, in order");
  assert.deepEqual(received.map((m) => m.body), acks.map((_, i) => `message ${i + 1}`));
  assert.deepEqual(reloads, []);
});

// The client library against real Shoal instances behind nginx, started by
// tests/lb/js_client.rs, which passes SHOAL_URL (nginx) and SHOAL_INSTANCES (each
// instance's own address and pid). Two users chat and the instance holding the
// receiver's socket, then the sender's, is killed mid-conversation: every message
// arrives once, in order, and every send is committed exactly once.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Auth, ShoalRealtime, createRest } from "../dist/index.js";
import { base, instances, kill, until, websockets } from "../test-support/cluster.mjs";


const clients = [];
after(() => clients.forEach((c) => c.close()));

/** Registers and logs in a new user; its Auth, REST client and e-mail. */
async function newUser(name) {
  const email = `${name}-${crypto.randomUUID()}@example.com`;
  const auth = new Auth(base);
  const rest = createRest(auth);
  const { response, error } = await rest.POST("/api/auth/register", {
    body: { email, password: "correct horse battery", display_name: name },
  });
  assert.equal(response.status, 201, JSON.stringify(error));
  await auth.login(email, "correct horse battery");
  return { auth, rest, email };
}

/** A user with a workspace shared with a second user. */
async function pair() {
  const ada = await newUser("ada");
  const bob = await newUser("bob");
  const { data: ws, error } = await ada.rest.POST("/api/workspaces", { body: { name: "crew" } });
  assert.ok(ws, JSON.stringify(error));
  const added = await ada.rest.POST("/api/workspaces/{wid}/members", {
    params: { path: { wid: ws.id } },
    body: { email: bob.email },
  });
  assert.equal(added.response.status, 201, JSON.stringify(added.error));
  return { ada, bob, wid: ws.id };
}

/** Connects `user` (through nginx unless `url` is given) and joins `wid`; the index of
 * the instance its socket is on. */
async function connect(user, wid, url) {
  const before = await websockets();
  const rt = new ShoalRealtime(user.auth, { url, socket: { transports: ["websocket"] } });
  clients.push(rt);
  const received = [];
  const reloads = [];
  let reconnects = 0;
  rt.on("message", (m) => received.push(m));
  rt.on("reload", (r) => reloads.push(r));
  rt.on("connected", () => reconnects++);
  await rt.join(wid);
  const instance = await until("the socket to be counted by its instance", async () => {
    const now = await websockets();
    const i = now.findIndex((n, k) => n !== null && n > before[k]);
    return i >= 0 ? i : undefined;
  });
  return { rt, received, reloads, instance, reconnects: () => reconnects };
}

/** Sends `total` messages from `from`, one after the other; `midway` runs before the
 * middle one. The acks. */
async function converse(from, wid, total, midway) {
  const acks = [];
  for (let n = 1; n <= total; n++) {
    if (n === total / 2) await midway();
    acks.push(await from.rt.send(wid, `message ${n}`));
    // A steady chat, under the per-socket event budget (20 events/s).
    await new Promise((r) => setTimeout(r, 60));
  }
  return acks;
}

/** Every acked message reached `to` once, in order, and no send was posted twice. */
async function assertDelivered(to, wid, acks) {
  const last = acks.at(-1).seq;
  await until("every message to arrive", async () =>
    to.received.some((m) => m.seq >= last) ? true : undefined,
  );
  assert.deepEqual(to.reloads, [], "nothing was missed beyond the replay");
  assert.deepEqual(
    to.received.map((m) => m.seq),
    acks.map((a) => a.seq),
    "every committed message once, in order",
  );
  assert.deepEqual(
    to.received.map((m) => m.body),
    acks.map((_, i) => `message ${i + 1}`),
    "each send committed once",
  );
  assert.equal(new Set(acks.map((a) => a.id)).size, acks.length, "no send was posted twice");
  assert.equal(to.rt.lastSeq(wid), last);
}

test("the receiver's instance is killed: it resumes elsewhere and misses nothing", { timeout: 60_000 }, async () => {
  const { ada, bob, wid } = await pair();
  const receiver = await connect(bob, wid);
  // The sender on another instance, directly: it keeps sending while Bob is away.
  const other = instances.findIndex((i, k) => k !== receiver.instance && !i.dead);
  const sender = await connect(ada, wid, instances[other].base);
  const acks = await converse(sender, wid, 60, async () => {
    const gone = new Promise((r) => receiver.rt.on("disconnected", r));
    kill(receiver.instance);
    await gone;
  });
  await assertDelivered(receiver, wid, acks);
  assert.ok(receiver.reconnects() >= 1, "the receiver reconnected");
});

test("the sender's instance is killed: its sends are retried and committed once", { timeout: 60_000 }, async () => {
  const { ada, bob, wid } = await pair();
  const sender = await connect(ada, wid);
  const other = instances.findIndex((i, k) => k !== sender.instance && !i.dead);
  const receiver = await connect(bob, wid, instances[other].base);
  const acks = await converse(sender, wid, 60, async () => kill(sender.instance));
  await assertDelivered(receiver, wid, acks);
  assert.ok(sender.reconnects() >= 1, "the sender reconnected");
});

test("a send repeated with its clientId is the same message", { timeout: 60_000 }, async () => {
  const { ada, bob, wid } = await pair();
  const alive = instances.findIndex((i) => !i.dead);
  const receiver = await connect(bob, wid, instances[alive].base);
  const sender = await connect(ada, wid, instances[alive].base);
  const clientId = crypto.randomUUID();
  const first = await sender.rt.send(wid, "message 1", clientId);
  const again = await sender.rt.send(wid, "message 1", clientId);
  assert.deepEqual(again, first, "the original message's id and seq");
  await assertDelivered(receiver, wid, [first]);
});

test("the connection outlives its access tokens: renewed before each expires", { timeout: 60_000 }, async () => {
  // The instances issue access tokens of JWT_ACCESS_TTL=3 s (tests/lb/js_client.rs).
  const { ada, bob, wid } = await pair();
  const alive = instances.findIndex((i) => !i.dead);
  const receiver = await connect(bob, wid, instances[alive].base);
  const sender = await connect(ada, wid, instances[alive].base);
  const ended = [];
  receiver.rt.on("sessionEnded", (e) => ended.push(e));
  const socket = receiver.rt.socket.id;
  const firstExpiry = bob.auth.tokens.expiresAt;
  // Renewals until the connection has lived a second and a half past the expiry of
  // the token it was opened with (the server checks expiries every second).
  await new Promise((resolve) => {
    receiver.rt.on("renewed", () => Date.now() > firstExpiry + 1500 && resolve());
  });
  const ack = await sender.rt.send(wid, "message 1");
  await assertDelivered(receiver, wid, [ack]);
  assert.equal(receiver.rt.socket.id, socket, "still the same connection");
  assert.deepEqual(ended, []);
});

test("a client that missed more than the server replays is told to reload", { timeout: 60_000 }, async () => {
  const { ada, bob, wid } = await pair();
  const alive = instances.findIndex((i) => !i.dead);
  // Bob had seen message 1 when he went away; 501 more were posted meanwhile, one
  // more than a join replays (replay_limit, 500).
  const posted = [];
  for (let i = 1; i <= 502; i++) {
    const { data, error } = await ada.rest.POST("/api/workspaces/{wid}/messages", {
      params: { path: { wid } },
      body: { body: `message ${i}` },
    });
    assert.ok(data, JSON.stringify(error));
    posted.push(data);
  }
  const rt = new ShoalRealtime(bob.auth, { url: instances[alive].base, socket: { transports: ["websocket"] } });
  clients.push(rt);
  const reloads = [];
  const received = [];
  rt.on("reload", (r) => reloads.push(r));
  rt.on("message", (m) => received.push(m));
  const ack = await rt.join(wid, posted[0].seq);
  assert.equal(ack.recovered, false);
  assert.equal(ack.replay_limit, 500);
  assert.deepEqual(reloads, [{ workspaceId: wid, lastSeq: posted.at(-1).seq }], "told to reload once");
  assert.deepEqual(received, [], "nothing half-replayed");
  // Delivery goes on after the head.
  const next = await ada.rest.POST("/api/workspaces/{wid}/messages", {
    params: { path: { wid } },
    body: { body: "after the reload" },
  });
  await until("the next message", async () => (received.length === 1 ? true : undefined));
  assert.equal(received[0].seq, next.data.seq);
  assert.equal(rt.lastSeq(wid), next.data.seq);
});

// What the client library costs a receiving app, beside the bare socket.io-client:
// the same receivers of one workspace, on the library (`ShoalRealtime`: token renewal,
// seq tracking, de-duplication) or on socket.io-client with a hand-written join; one
// publisher (bare, the same in both) sends at a fixed rate. Reports this process's CPU
// per delivered message and the delivery latency (BENCHMARKS.md, "The client
// library").
//
//   node bench/fanout.mjs --state STATE.json --url URL --client library|bare
//        [--clients 200] [--rate 15] [--duration 20]   (one publishing socket: at most 20/s)
//
// STATE.json comes from ../shared/bench/setup.js (users with tokens, one workspace).

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { Auth, ShoalRealtime } from "../dist/index.js";

const { values: args } = parseArgs({
  options: {
    state: { type: "string" },
    url: { type: "string" },
    client: { type: "string", default: "library" },
    clients: { type: "string", default: "200" },
    rate: { type: "string", default: "15" },
    duration: { type: "string", default: "20" },
  },
});
const state = JSON.parse(readFileSync(args.state, "utf8"));
const url = args.url ?? state.base_url;
const wid = state.workspace_id;
const N = Number(args.clients);
const RATE = Number(args.rate);
const SECONDS = Number(args.duration);
if (state.users.length < N + 1) throw new Error(`the state has ${state.users.length} users; ${N + 1} needed`);

const latencies = [];
let delivered = 0;
const record = (body) => {
  const sent = Number(body);
  if (Number.isFinite(sent)) latencies.push(performance.now() - sent);
  delivered++;
};

function bareSocket(user) {
  return io(url, { auth: { token: user.access_token }, transports: ["websocket"], forceNew: true });
}

async function bareReceiver(user) {
  const socket = bareSocket(user);
  socket.on("message:new", (m) => record(m.body));
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  const ack = await socket.timeout(30_000).emitWithAck("workspace:join", { workspace_id: wid });
  if (!ack.ok) throw new Error(`join: ${JSON.stringify(ack)}`);
  return () => socket.close();
}

async function libraryReceiver(user) {
  const auth = new Auth(url);
  auth.accept({
    access_token: user.access_token,
    refresh_token: user.refresh_token,
    expires_in: state.token_expires_in,
    token_type: "Bearer",
  });
  const rt = new ShoalRealtime(auth, { socket: { transports: ["websocket"], forceNew: true } });
  rt.on("message", (m) => record(m.body));
  await rt.join(wid);
  return () => rt.close();
}

const receive = args.client === "bare" ? bareReceiver : libraryReceiver;
const closers = [];
for (let i = 1; i <= N; i += 20) {
  const batch = state.users.slice(i, Math.min(i + 20, N + 1));
  closers.push(...(await Promise.all(batch.map(receive))));
}
const publisher = bareSocket(state.users[0]);
await new Promise((resolve) => publisher.once("connect", resolve));
await publisher.timeout(30_000).emitWithAck("workspace:join", { workspace_id: wid });

const cpuBefore = process.cpuUsage();
const started = performance.now();
const total = RATE * SECONDS;
let sent = 0;
let acked = 0;
await new Promise((resolve) => {
  const timer = setInterval(() => {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * RATE));
    while (sent < due) {
      sent++;
      publisher
        .timeout(30_000)
        .emitWithAck("message:send", { workspace_id: wid, body: String(performance.now()) })
        .then((ack) => ack.ok && acked++);
    }
    if (sent >= total) {
      clearInterval(timer);
      resolve();
    }
  }, 5);
});
// Until every delivery arrived (or 10 s).
const deadline = performance.now() + 10_000;
while ((delivered < total * N || acked < total) && performance.now() < deadline) {
  await new Promise((r) => setTimeout(r, 20));
}
const cpu = process.cpuUsage(cpuBefore);
const wall = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? null;
const receiverDeliveries = delivered;
console.log(
  JSON.stringify({
    client: args.client,
    receivers: N,
    rate: RATE,
    duration_s: SECONDS,
    sent,
    acked,
    expected: total * N,
    delivered: receiverDeliveries,
    process_cpu_s: (cpu.user + cpu.system) / 1e6,
    cpu_us_per_delivery: ((cpu.user + cpu.system) / Math.max(1, receiverDeliveries)).toFixed(2),
    wall_s: Number(wall.toFixed(2)),
    p50_ms: Number(at(0.5)?.toFixed(2)),
    p99_ms: Number(at(0.99)?.toFixed(2)),
  }),
);
closers.forEach((c) => c());
publisher.close();
process.exit(0);

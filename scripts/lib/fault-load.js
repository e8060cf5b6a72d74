#!/usr/bin/env node
'use strict';
// Mixed load through a fault, measured per phase as a client sees it (used by
// scripts/fault-redis.sh; works against Shoal and the Node.js peer alike):
//   - HTTP through the load balancer at a steady rate: cookie and bearer GET /api/me,
//     GET tasks, POST tasks; every request bounded by REQUEST_TIMEOUT_MS;
//   - chat at a steady rate with the stock socket.io-client: one sender per instance,
//     receivers on every instance (sockets connect to the instances directly, so each
//     message has receivers on its sender's instance and on the others);
//   - each instance's /health/ready, polled.
// The current phase is read from PHASE_FILE (written by the script that causes the
// faults); a request or message belongs to the phase it was sent in. When the file says
// `done`, the chat drains for DRAIN_MS, then one JSON document is printed: per phase,
// HTTP by status with p50/p99, chat sent/acked/delivered/lost/duplicated, the seconds
// from the phase's start to the first delivery across instances, and readiness.
//
// The last QUIET instances have receivers only: a message reaches them from another
// instance or not at all, which shows when delivery across instances stops and when
// it is back.
//
//   node scripts/lib/fault-load.js --lb URL --instances URL,URL --phase-file F
//        [--http-rate 100] [--chat-rate 10] [--quiet 1] [--drain-ms 15000]
const fs = require('fs');
const path = require('path');
const { io } = require(path.join(__dirname, '../../../shared/bench/node_modules/socket.io-client'));

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const LB = args.lb;
const INSTANCES = (args.instances || '').split(',').filter(Boolean);
const PHASE_FILE = args['phase-file'];
const HTTP_RATE = Number(args['http-rate'] || 100);
const CHAT_RATE = Number(args['chat-rate'] || 10); // per sender (one per instance)
const DRAIN_MS = Number(args['drain-ms'] || 15000);
const QUIET = Number(args.quiet ?? 1);
const REQUEST_TIMEOUT_MS = 5000;
const MAX_IN_FLIGHT = 400;
const PASSWORD = 'correct horse battery staple';
if (!LB || INSTANCES.length < 2 || !PHASE_FILE || QUIET >= INSTANCES.length) {
  console.error('usage: fault-load.js --lb URL --instances URL,URL[,…] --phase-file FILE');
  process.exit(2);
}

const started = Date.now();
const now = () => (Date.now() - started) / 1000;
let phase = 'setup';
const phaseStart = {};
const phases = [];
function readPhase() {
  let p;
  try { p = fs.readFileSync(PHASE_FILE, 'utf8').trim(); } catch { return; }
  if (p && p !== phase) {
    phase = p;
    if (!(p in phaseStart)) { phaseStart[p] = now(); if (p !== 'done') phases.push(p); }
  }
}

function stats(p) {
  stats.by = stats.by || {};
  if (!stats.by[p]) {
    stats.by[p] = {
      http: { status: {}, latencies: [] },
      chat: { sent: 0, acked: 0, ack_failed: 0, ack_errors: {} },
      ready: {},
    };
  }
  return stats.by[p];
}

// ------------------------------------------------------------------ HTTP

async function call(method, route, { body, cookie, token, base = LB } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (cookie) headers.cookie = cookie;
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(base + route, {
    method, headers, body: body && JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, cookies: r.headers.getSetCookie() };
}

async function account(name) {
  const email = `fault-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
  const reg = await call('POST', '/api/auth/register', { body: { email, password: PASSWORD, display_name: name } });
  if (reg.status !== 201) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.json)}`);
  const login = await call('POST', '/api/auth/login', { body: { email, password: PASSWORD } });
  if (login.status !== 200) throw new Error(`login: ${login.status} ${JSON.stringify(login.json)}`);
  return { id: reg.json.id, email, cookie: login.cookies.map((c) => c.split(';')[0]).join('; '), token: login.json.access_token };
}

let inFlight = 0;
function httpOne(users, wid, n) {
  const p = phase;
  const s = stats(p).http;
  if (inFlight >= MAX_IN_FLIGHT) { s.status.client_overloaded = (s.status.client_overloaded || 0) + 1; return; }
  const u = users[n % users.length];
  const kind = n % 10;
  let req;
  if (kind < 4) req = ['GET', '/api/me', { cookie: u.cookie }];
  else if (kind < 7) req = ['GET', '/api/me', { token: u.token }];
  else if (kind < 9) req = ['GET', `/api/workspaces/${wid}/tasks?limit=20`, { token: u.token }];
  else req = ['POST', `/api/workspaces/${wid}/tasks`, { token: u.token, body: { title: `fault task ${n}` } }];
  const t0 = performance.now();
  inFlight++;
  fetch(LB + req[1], {
    method: req[0],
    headers: {
      'content-type': 'application/json',
      ...(req[2].cookie ? { cookie: req[2].cookie } : {}),
      ...(req[2].token ? { authorization: `Bearer ${req[2].token}` } : {}),
    },
    body: req[2].body && JSON.stringify(req[2].body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  })
    .then(async (r) => { await r.arrayBuffer(); return String(r.status); })
    .catch((e) => (e.name === 'TimeoutError' ? 'timeout' : 'connection_error'))
    .then((status) => {
      inFlight--;
      s.status[status] = (s.status[status] || 0) + 1;
      s.latencies.push(performance.now() - t0);
    });
}

// ------------------------------------------------------------------ chat

const sent = new Map(); // client_id -> {phase, from, t}
const deliveries = []; // per receiver: Map client_id -> count
// Deliveries across instances: {t (s since start), latency (s), phase the message was sent in}.
const crossArrivals = [];
// A delivery this soon after its send came the live way (not from a later gap repair).
const LIVE_S = 1;

function socketFor(base, user, wid, index) {
  return new Promise((resolve, reject) => {
    let lastSeq = null;
    const socket = io(base, { transports: ['websocket'], auth: { token: user.token } });
    const seen = new Map();
    deliveries[index] = seen;
    const join = () => socket.timeout(REQUEST_TIMEOUT_MS)
      .emitWithAck('workspace:join', lastSeq === null ? { workspace_id: wid } : { workspace_id: wid, since_seq: lastSeq })
      .catch(() => null);
    socket.on('connect', async () => {
      const ack = await join();
      if (ack && ack.ok === false) reject(new Error(`join: ${JSON.stringify(ack)}`));
      else resolve(socket);
    });
    socket.on('connect_error', (e) => { if (!socket.active) reject(e); });
    socket.on('message:new', (m) => {
      if (m.workspace_id !== wid || !m.client_id) return;
      if (typeof m.seq === 'number' && (lastSeq === null || m.seq > lastSeq)) lastSeq = m.seq;
      seen.set(m.client_id, (seen.get(m.client_id) || 0) + 1);
      const origin = sent.get(m.client_id);
      if (origin && origin.from !== index >> 1) {
        const quiet = index >> 1 >= INSTANCES.length - QUIET;
        crossArrivals.push({ t: now(), latency: now() - origin.t, phase: origin.phase, quiet });
      }
    });
  });
}

let chatN = 0;
function chatOne(socket, from, wid) {
  const p = phase;
  const s = stats(p).chat;
  const clientId = `f${from}-${chatN++}`;
  sent.set(clientId, { phase: p, from, t: now() });
  s.sent++;
  socket.timeout(REQUEST_TIMEOUT_MS * 2)
    .emitWithAck('message:send', { workspace_id: wid, body: `fault ${clientId}`, client_id: clientId })
    .then((ack) => {
      if (ack && typeof ack.seq === 'number') { s.acked++; sent.get(clientId).acked = true; } else {
        s.ack_failed++;
        const code = (ack && ack.error && ack.error.code) || 'no_seq';
        s.ack_errors[code] = (s.ack_errors[code] || 0) + 1;
      }
    })
    .catch(() => { s.ack_failed++; s.ack_errors.timeout = (s.ack_errors.timeout || 0) + 1; });
}

// ------------------------------------------------------------------ readiness

function pollReady() {
  const p = phase;
  INSTANCES.forEach((base, i) => {
    fetch(`${base}/health/ready`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
      .then((r) => { r.arrayBuffer(); return String(r.status); })
      .catch(() => 'unreachable')
      .then((status) => {
        const r = stats(p).ready;
        r[i] = r[i] || {};
        r[i][status] = (r[i][status] || 0) + 1;
      });
  });
}

// ------------------------------------------------------------------ report

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 10) / 10;
}

function report() {
  const out = { phases: [], started_at: new Date(started).toISOString() };
  for (const p of phases) {
    const s = stats(p);
    const lat = s.http.latencies.sort((a, b) => a - b);
    // Requests the client could not even send (MAX_IN_FLIGHT earlier ones still
    // hanging) count as failed attempts.
    const total = lat.length + (s.http.status.client_overloaded || 0);
    const ok = Object.entries(s.http.status).filter(([k]) => /^2/.test(k)).reduce((a, [, v]) => a + v, 0);
    // Messages sent in this phase that the server acknowledged: each must reach every
    // receiver once.
    let delivered = 0; let lost = 0; let duplicated = 0; let unackedDelivered = 0;
    for (const [clientId, m] of sent) {
      if (m.phase !== p) continue;
      for (const seen of deliveries) {
        const c = seen.get(clientId) || 0;
        if (!m.acked) { if (c > 0) unackedDelivered++; continue; }
        if (c === 0) lost++; else delivered++;
        if (c > 1) duplicated += c - 1;
      }
    }
    const start = phaseStart[p];
    const end = phases[phases.indexOf(p) + 1] ? phaseStart[phases[phases.indexOf(p) + 1]] : phaseStart.done;
    const inWindow = crossArrivals.filter((a) => a.t >= start && a.t < end);
    const live = crossArrivals.filter((a) => a.phase === p && a.latency < LIVE_S);
    const liveQuiet = live.filter((a) => a.quiet);
    const firstAfter = (list) => (list.length ? Math.round((Math.min(...list.map((a) => a.t)) - start) * 100) / 100 : null);
    out.phases.push({
      phase: p,
      seconds: Math.round((end - start) * 10) / 10,
      http: {
        requests: total,
        by_status: s.http.status,
        ok_percent: total ? Math.round((ok / total) * 10000) / 100 : null,
        p50_ms: percentile(lat, 0.5),
        p99_ms: percentile(lat, 0.99),
      },
      chat: {
        sent: s.chat.sent,
        acked: s.chat.acked,
        ack_failed: s.chat.ack_failed,
        ack_errors: s.chat.ack_errors,
        receivers: deliveries.length,
        delivered,
        lost,
        duplicated,
        unacked_but_delivered: unackedDelivered,
        // Deliveries across instances that arrived during the phase (live or repaired).
        cross_instance_arrivals: inWindow.length,
        quiet_instance_arrivals: inWindow.filter((a) => a.quiet).length,
        // Seconds from the phase's start to the first message sent in it that reached
        // another instance within LIVE_S of its send: on any instance, and on a quiet one
        // (no sender of its own: nothing there reveals a hole, so only a working
        // cross-instance path brings it anything).
        cross_instance_live_after_s: firstAfter(live),
        quiet_instance_live_after_s: firstAfter(liveQuiet),
      },
      ready: s.ready,
    });
  }
  const totals = out.phases.reduce((a, p) => ({ lost: a.lost + p.chat.lost, duplicated: a.duplicated + p.chat.duplicated }), { lost: 0, duplicated: 0 });
  out.chat_totals = totals;
  return out;
}

// ------------------------------------------------------------------ main

async function main() {
  // Setup through the load balancer: an owner, a workspace, members.
  const owner = await account('owner');
  const ws = await call('POST', '/api/workspaces', { token: owner.token, body: { name: 'fault' } });
  if (ws.status !== 201) throw new Error(`workspace: ${ws.status} ${JSON.stringify(ws.json)}`);
  const wid = ws.json.id;
  const users = [owner];
  for (let i = 1; i < 2 * INSTANCES.length; i++) {
    const u = await account(`member ${i}`);
    const add = await call('POST', `/api/workspaces/${wid}/members`, { token: owner.token, body: { email: u.email, role: 'member' } });
    if (add.status !== 201 && add.status !== 200) throw new Error(`add member: ${add.status} ${JSON.stringify(add.json)}`);
    users.push(u);
  }
  // Two sockets per instance; on all but the quiet ones the first of the pair sends.
  const sockets = await Promise.all(INSTANCES.flatMap((base, i) => [
    socketFor(base, users[2 * i], wid, 2 * i), socketFor(base, users[2 * i + 1], wid, 2 * i + 1),
  ]));
  process.stderr.write(`fault-load: ${users.length} users, workspace ${wid}, ${sockets.length} sockets; waiting for phases\n`);

  let n = 0;
  const httpTimer = setInterval(() => {
    readPhase();
    if (phase === 'setup' || phase === 'done') return;
    // 10 ms ticks: HTTP_RATE / 100 per tick, the fraction carried.
    httpTimer.carry = (httpTimer.carry || 0) + HTTP_RATE / 100;
    while (httpTimer.carry >= 1) { httpTimer.carry -= 1; httpOne(users, wid, n++); }
  }, 10);
  const chatTimer = setInterval(() => {
    if (phase === 'setup' || phase === 'done') return;
    INSTANCES.slice(0, INSTANCES.length - QUIET).forEach((_, i) => chatOne(sockets[2 * i], i, wid));
  }, 1000 / CHAT_RATE);
  const readyTimer = setInterval(() => { if (phase !== 'setup' && phase !== 'done') pollReady(); }, 500);

  await new Promise((resolve) => {
    const t = setInterval(() => { readPhase(); if (phase === 'done') { clearInterval(t); resolve(); } }, 100);
  });
  clearInterval(httpTimer); clearInterval(chatTimer); clearInterval(readyTimer);
  // Let late deliveries (gap repairs, queued publishes) and in-flight requests land.
  await new Promise((r) => setTimeout(r, DRAIN_MS));
  console.log(JSON.stringify(report(), null, 1));
  sockets.forEach((s) => s.close());
  process.exit(0);
}

main().catch((e) => { console.error(`fault-load: ${e.stack || e}`); process.exit(1); });

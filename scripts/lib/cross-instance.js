#!/usr/bin/env node
'use strict';
// What one login and one chat room must do across two instances of a cluster, checked
// as a client sees it (used by scripts/scale-test.sh):
//   - a login on FIRST works on LAST (cookie and bearer), a logout on LAST ends it on FIRST;
//   - a Socket.IO client (the stock socket.io-client) on FIRST receives a message sent
//     from LAST, and the other way round.
// Prints one JSON line; exits 1 with the reason when a promise does not hold.
//   node scripts/lib/cross-instance.js FIRST_URL LAST_URL
const path = require('path');
const { io } = require(path.join(__dirname, '../../../shared/bench/node_modules/socket.io-client'));

const [first, last] = process.argv.slice(2);
const PASSWORD = 'correct horse battery staple';
const TIMEOUT_MS = 15000;

function fail(why) {
  console.log(JSON.stringify({ ok: false, why }));
  process.exit(1);
}

async function call(base, method, route, { body, cookie, token } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (cookie) headers.cookie = cookie;
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(base + route, { method, headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* no body */ }
  return { status: r.status, json, setCookie: r.headers.get('set-cookie') };
}

async function account(base, name) {
  const email = `scale-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
  const reg = await call(base, 'POST', '/api/auth/register', { body: { email, password: PASSWORD, display_name: name } });
  if (reg.status !== 201) fail(`register on ${base}: ${reg.status} ${JSON.stringify(reg.json)}`);
  const login = await call(base, 'POST', '/api/auth/login', { body: { email, password: PASSWORD } });
  if (login.status !== 200) fail(`login on ${base}: ${login.status}`);
  const cookie = (login.setCookie || '').split(';')[0];
  return { id: reg.json.id, email, cookie, token: login.json.access_token };
}

function connect(base, token) {
  return new Promise((resolve) => {
    const socket = io(base, { transports: ['websocket'], auth: { token }, reconnection: false });
    const timer = setTimeout(() => fail(`Socket.IO connect to ${base} timed out`), TIMEOUT_MS);
    socket.on('connect', () => { clearTimeout(timer); resolve(socket); });
    socket.on('connect_error', (e) => fail(`Socket.IO connect to ${base}: ${e.message}`));
  });
}

function ack(socket, event, data) {
  return socket.timeout(TIMEOUT_MS).emitWithAck(event, data).catch((e) => fail(`${event}: ${e.message}`));
}

function nextMessage(socket, wid, clientId) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => fail(`message ${clientId} never arrived`), TIMEOUT_MS);
    socket.on('message:new', (m) => {
      if (m.workspace_id === wid && m.client_id === clientId) { clearTimeout(timer); resolve(m); }
    });
  });
}

(async () => {
  // One login, every instance.
  const ada = await account(first, 'Ada');
  for (const auth of [{ cookie: ada.cookie }, { token: ada.token }]) {
    const me = await call(last, 'GET', '/api/me', auth);
    if (me.status !== 200 || me.json.id !== ada.id) fail(`login from FIRST not honoured on LAST: ${me.status}`);
  }
  const out = await call(last, 'POST', '/api/auth/logout', { cookie: ada.cookie });
  if (out.status !== 204) fail(`logout on LAST: ${out.status}`);
  const after = await call(first, 'GET', '/api/me', { cookie: ada.cookie });
  if (after.status !== 401) fail(`logout on LAST not honoured on FIRST: ${after.status}`);

  // One room, every instance.
  const [a, b] = [await account(first, 'A'), await account(last, 'B')];
  const ws = await call(first, 'POST', '/api/workspaces', { token: a.token, body: { name: 'scale' } });
  if (ws.status !== 201) fail(`create workspace: ${ws.status}`);
  const wid = ws.json.id;
  const add = await call(first, 'POST', `/api/workspaces/${wid}/members`, { token: a.token, body: { email: b.email, role: 'member' } });
  if (add.status >= 300) fail(`add member: ${add.status}`);
  const [sa, sb] = [await connect(first, a.token), await connect(last, b.token)];
  for (const s of [sa, sb]) {
    const joined = await ack(s, 'workspace:join', { workspace_id: wid });
    if (!joined.ok) fail(`join: ${JSON.stringify(joined)}`);
  }
  const toFirst = nextMessage(sa, wid, 'from-last');
  const sent1 = await ack(sb, 'message:send', { workspace_id: wid, body: 'from the last instance', client_id: 'from-last' });
  if (!sent1.ok) fail(`send on LAST: ${JSON.stringify(sent1)}`);
  await toFirst;
  const toLast = nextMessage(sb, wid, 'from-first');
  const sent2 = await ack(sa, 'message:send', { workspace_id: wid, body: 'from the first instance', client_id: 'from-first' });
  if (!sent2.ok) fail(`send on FIRST: ${JSON.stringify(sent2)}`);
  await toLast;
  sa.close(); sb.close();
  console.log(JSON.stringify({ ok: true, login_crosses: true, logout_crosses: true, chat_both_ways: true }));
  process.exit(0);
})().catch((e) => fail(String(e)));

#!/usr/bin/env node
'use strict';
// One Socket.IO client (user 0 of a setup.js state file) joins the state's workspace and
// prints, once a second, how many of each event it received in that second (JSON), for
// SECONDS seconds. Used by scripts/bench-presence.sh.
//   node scripts/presence-observer.js STATE URL SECONDS
const path = require('path');
const { io } = require(path.join(__dirname, '../../shared/bench/node_modules/socket.io-client'));
const [stateFile, url, seconds] = process.argv.slice(2);
const state = JSON.parse(require('fs').readFileSync(stateFile, 'utf8'));
const socket = io(url, { transports: ['websocket'], auth: { token: state.users[0].access_token } });
const counts = {};
const t0 = Date.now();
socket.onAny((event) => { counts[event] = (counts[event] || 0) + 1; });
socket.on('connect', () => socket.emit('workspace:join', { workspace_id: state.workspace_id }, () => {}));
setInterval(() => {
  console.log(JSON.stringify({ t: Math.round((Date.now() - t0) / 1000), ...counts }));
  for (const k of Object.keys(counts)) delete counts[k];
}, 1000);
setTimeout(() => process.exit(0), Number(seconds) * 1000);

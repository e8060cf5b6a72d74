// What the tests in test/ and test-browser/ share: the instances tests/lb started
// (SHOAL_URL: nginx; SHOAL_INSTANCES: each instance's address and pid), and bounded
// waits on them.

export const base = process.env.SHOAL_URL;
export const instances = JSON.parse(process.env.SHOAL_INSTANCES ?? "[]");
if (!base || instances.length < 2) {
  throw new Error("run through tests/lb (SHOAL_URL and SHOAL_INSTANCES are not set)");
}

/** Kills instance `i` (SIGKILL: no drain, no goodbye). */
export function kill(i) {
  process.kill(instances[i].pid, "SIGKILL");
  instances[i].dead = true;
}

/** Resolves with the first value `probe` answers (not undefined), polling. */
export async function until(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Each live instance's count of open WebSocket connections (null: killed). */
export async function websockets() {
  return Promise.all(
    instances.map(async (i) => {
      if (i.dead) return null;
      const r = await fetch(`${i.base}/health`);
      return (await r.json()).connections.websocket;
    }),
  );
}

// The workspace page (`/`) in headless Chromium, driven by Playwright, against real
// instances behind nginx started by tests/lb/web_page.rs (SHOAL_URL: nginx;
// SHOAL_INSTANCES: each instance's address and pid). Two users, on two different
// instances, sign up, chat and move a task; the instance of one of them is killed;
// both pages end up with every message once, in order, and the task in its column.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { base, instances, kill, until, websockets } from "../test-support/cluster.mjs";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let browser;
const pageErrors = [];
before(async () => {
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
});
after(async () => browser?.close());

/** A page of its own (separate storage) at `url`, signed up as `name`. */
async function signUp(url, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && pageErrors.push(`${name}: ${m.text()}`));
  await page.goto(url);
  const email = `${name}-${crypto.randomUUID()}@example.com`;
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", "correct horse battery");
  await page.fill("input[name=display_name]", name);
  await page.click("[data-testid=signup]");
  await page.waitForSelector(".status.online");
  return { page, email };
}

/** The `seq`s and texts of the chat as the page shows it. */
async function chat(page) {
  return page.$$eval("[data-testid=messages] .message", (els) =>
    els.map((e) => ({ seq: Number(e.dataset.seq), text: e.lastChild.textContent })),
  );
}

async function columnOf(page, title) {
  const task = page.locator(`.task[data-title="${title}"]`);
  if ((await task.count()) !== 1) return undefined;
  return task.evaluate((e) => e.closest(".column").dataset.status);
}

/** Sends `text` from `page` and waits until the page shows it (committed). */
async function send(page, text) {
  const shown = (await chat(page)).length;
  await page.fill("[data-testid=chat-input]", text);
  await page.click("[data-testid=send]");
  await until(`"${text}" on its sender's page`, async () =>
    (await chat(page)).slice(shown).some((m) => m.text === text) ? true : undefined,
  );
}

test("two users on two instances chat and move a task through an instance's death", { timeout: 60_000 }, async () => {
  // Ada through nginx; her instance is the one whose WebSocket count rises.
  const before = await websockets();
  const ada = await signUp(base, "Ada");
  const adas = await until("Ada's instance", async () => {
    const now = await websockets();
    const i = now.findIndex((n, k) => n > before[k]);
    return i >= 0 ? i : undefined;
  });
  // Bob directly on another instance.
  const bobs = instances.findIndex((_, k) => k !== adas);
  const bob = await signUp(instances[bobs].base, "Bob");

  await ada.page.fill("[data-testid=workspace-name]", "crew");
  await ada.page.click("[data-testid=create-workspace]");
  await ada.page.waitForSelector("button.ws.selected");
  await ada.page.fill("[data-testid=member-email]", bob.email);
  await ada.page.click("[data-testid=add-member]");
  // Bob sees the workspace on his next load (his login survives it).
  await until("Bob to be a member", async () => {
    await bob.page.reload();
    await bob.page.waitForSelector(".status.online");
    return (await bob.page.locator("button.ws", { hasText: "crew" }).count()) === 1 ? true : undefined;
  });
  await bob.page.waitForSelector("button.ws.selected");
  await until("both online in the workspace", async () =>
    (await ada.page.locator("[data-testid=online] li").count()) === 2 ? true : undefined,
  );

  const sent = [];
  for (let i = 1; i <= 3; i++) {
    await send(ada.page, `ada ${i}`);
    sent.push(`ada ${i}`);
    await send(bob.page, `bob ${i}`);
    sent.push(`bob ${i}`);
    await until(`message ${sent.length} on both pages`, async () =>
      (await chat(ada.page)).length === sent.length && (await chat(bob.page)).length === sent.length
        ? true
        : undefined,
    );
  }
  await ada.page.fill("[data-testid=task-title]", "ship it");
  await ada.page.click("[data-testid=add-task]");
  await until("the task on Bob's board", async () => ((await columnOf(bob.page, "ship it")) === "todo" ? true : undefined));
  await bob.page.click(`.task[data-title="ship it"] [data-testid=move-right]`);
  await until("the task in progress on Ada's board", async () =>
    (await columnOf(ada.page, "ship it")) === "in_progress" ? true : undefined,
  );

  // Ada's instance dies; Bob keeps chatting and moves the task on meanwhile.
  kill(adas);
  for (let i = 4; i <= 6; i++) {
    await send(bob.page, `bob ${i}`);
    sent.push(`bob ${i}`);
  }
  await bob.page.click(`.task[data-title="ship it"] [data-testid=move-right]`);
  await until("Ada's page to reconnect", async () =>
    (await ada.page.locator("#status[data-connects='2'].online").count()) === 1 ? true : undefined,
  );
  await send(ada.page, "ada is back");
  sent.push("ada is back");

  for (const [who, page] of [["Ada", ada.page], ["Bob", bob.page]]) {
    await until(`every message on ${who}'s page`, async () =>
      (await chat(page)).length >= sent.length ? true : undefined,
    );
    const shown = await chat(page);
    assert.deepEqual(
      shown.map((m) => m.seq),
      sent.map((_, i) => i + 1),
      `${who}'s page: every message once, in order`,
    );
    assert.deepEqual(shown.map((m) => m.text), sent, `${who}'s page: the texts`);
    await until(`the task done on ${who}'s page`, async () =>
      (await columnOf(page, "ship it")) === "done" ? true : undefined,
    );
  }
  assert.deepEqual(pageErrors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|net::/.test(e)), [], "no script error");
});
